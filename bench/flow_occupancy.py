"""A flow's response stage against the bare engine, in one process: tokens/s and how full the decode
batch stays.

    python bench/flow_occupancy.py                        # 1,000 rows, embedded model (~8 min)
    python bench/flow_occupancy.py --rows 256 --max-new-tokens 64      # a quick look
    python bench/flow_occupancy.py --simulate             # a simulated engine: seconds, no model

The same response prompts (each instruction once, numbered; sampled as the flows sample) through the
response stage as a flow runs it (batches of 32 rows, each a Prefect task run through the real
technique task, on a thread pool of 8 like the flows'), once per `--in-flight` value (task runs at
once: 8 as the flows run; more shows what a wider pool would change), then through the bare engine
(every prompt in one `generate` call, the engine at its best; `--again` adds one before the flows,
to show the machine's drift). Each line gives completion tokens/s over the wall time, its share of
the bare engine's, and the decode batch's average rows per step; then how many of the flows' first-
draw responses are the bare engine's, word for word. The last line is one JSON object.

`--simulate` replaces the model with a stand-in engine that sleeps for each decode step (0.1 s plus
0.6 ms per row, times `--time-scale`) and each prefill, with the same 256 slots, the same refill
rule, and answer lengths drawn like the embedded model's (most short, 6% running to the limit):
a way to study occupancy in seconds where a step's cost is mostly fixed (decoding bound by memory,
as on a GPU; on 2 CPU cores it grows with the rows). Its figures are the stand-in's, not the model's.
"""

import os

if __name__ == "__main__":  # run as a script; a test importing it keeps its own logging
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import tasks  # noqa: E402, F401  (first: Prefect defaults before prefect is imported)

# isort: split
import argparse
import hashlib
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefect import flow  # noqa: E402
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prompt_set import bench_prompts  # noqa: E402

import tasks.backends as backends  # noqa: E402
from tasks.backends import Generation, GenerationParams, get_backend  # noqa: E402
from tasks.backends.embedded import EMBEDDED_MODEL  # noqa: E402
from tasks.backends.fake import fake_text, prompt_text  # noqa: E402
from tasks.generate import build_messages  # noqa: E402
from tasks.pipeline import batching  # noqa: E402
from tasks.pipeline.usage import metered  # noqa: E402
from tasks.respond import TEMPLATE, generate_responses  # noqa: E402

SIMULATED = "simulated-engine"


class SimEngine:
    """Continuous batching with sleeps for compute: `slots` rows decode together; freed slots are
    refilled from the queue once `refill` are free (the real engine's rule), a prefill costing time."""

    def __init__(self, slots: int = 256, refill: int = 32, scale: float = 0.1) -> None:
        self.max_slots, self.refill, self.scale = slots, refill, scale
        self.waiting: deque = deque()
        self.running: list[list] = []  # [tokens left, future, tokens]
        self.wake = threading.Condition()
        self.stats = {"steps": 0, "row_steps": 0}
        threading.Thread(target=self._loop, daemon=True, name="sim-engine").start()

    def submit(self, lengths: list[int]) -> list[Future]:
        requests = [[n, Future(), n] for n in lengths]
        with self.wake:
            self.waiting.extend(requests)
            self.wake.notify()
        return [r[1] for r in requests]

    def _loop(self) -> None:
        while True:
            with self.wake:
                while not self.waiting and not self.running:
                    self.wake.wait()
                free = self.max_slots - len(self.running)
                group = []
                if self.waiting and (free >= self.refill or not self.running):
                    group = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
            if group:
                time.sleep(self.scale * (0.02 + 0.004 * len(group)))  # prefill gives each its first token
                for r in group:
                    r[0] -= 1
                self.running += group
            time.sleep(self.scale * (0.1 + 0.0006 * len(self.running)))
            self.stats["steps"] += 1
            self.stats["row_steps"] += len(self.running)
            for r in self.running:
                r[0] -= 1
                if r[0] <= 0:
                    r[1].set_result(r[2])
            self.running = [r for r in self.running if r[0] > 0]


class SimBackend:
    """The fake backend's texts, with token counts and timing from `SimEngine`."""

    name = "fake"

    def __init__(self, scale: float) -> None:
        self.engine = SimEngine(scale=scale)

    def generate(self, prompts: list, params: GenerationParams) -> list[Generation]:
        lengths = []
        for prompt in prompts:
            digest = hashlib.sha256(f"{params.seed}|{prompt_text(prompt)}".encode()).digest()
            u, v = (digest[0] * 256 + digest[1]) / 65536, (digest[2] * 256 + digest[3] + 1) / 65537
            tokens = params.max_new_tokens if u < 0.06 else 8 - int(55 * math.log(v))
            lengths.append(min(tokens, params.max_new_tokens))
        done = [f.result() for f in self.engine.submit(lengths)]
        return [
            Generation(fake_text(p, params), "stop", len(prompt_text(p).split()), n)
            for p, n in zip(prompts, done)
        ]


@flow(name="bench-flow-occupancy", task_runner=ThreadPoolTaskRunner(max_workers=8))
def respond_rows(rows: list[dict], params: GenerationParams, model: str, backend: str) -> dict:
    return batching.map_batches(generate_responses, rows, 32, params=params, model=model, backend=backend)


def bare(backend, prompts: list, params: GenerationParams) -> dict:
    engine, before = backend.engine, dict(backend.engine.stats)
    start = time.perf_counter()
    out = backend.generate(prompts, params)
    elapsed = time.perf_counter() - start
    texts = {str(i): g.text for i, g in enumerate(out)}
    return {
        "run": "bare engine",
        **_speed(sum(g.completion_tokens for g in out), elapsed, engine, before),
        "texts": texts,
    }


def in_flow(
    rows: list[dict], params: GenerationParams, model: str, name: str, in_flight: int, backend
) -> dict:
    engine, before = backend.engine, dict(backend.engine.stats)
    run = respond_rows.with_options(task_runner=ThreadPoolTaskRunner(max_workers=in_flight))
    with (
        tempfile.TemporaryDirectory() as tmp,
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: Path(tmp)}),
    ):
        start = time.perf_counter()
        out = run(rows, params, model, name)
        elapsed = time.perf_counter() - start
    assert not out["failures"], out["failures"][:1]
    tokens = sum(e["completion_tokens"] for e in out["usage"].values())
    texts = {}  # by row, not run: the responses of the first draw (not re-sampled after a check)
    for row in out["rows"]:
        generation = (
            row["generation"] if isinstance(row["generation"], dict) else json.loads(row["generation"])
        )
        if generation["respond"]["seed"] == params.seed:
            texts[row["id"].split("-", 1)[1]] = row["response"]
    return {
        "run": f"flow, {in_flight} task runs in flight",
        **_speed(tokens, elapsed, engine, before),
        "texts": texts,
    }


def _speed(tokens: int, elapsed: float, engine, before: dict) -> dict:
    steps, row_steps = (engine.stats[k] - before[k] for k in ("steps", "row_steps"))
    return {
        "seconds": round(elapsed, 1),
        "completion_tokens": tokens,
        "tok_s": round(tokens / elapsed, 1),
        "rows_per_step": round(row_steps / max(steps, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--simulate", action="store_true", help="a stand-in engine instead of the model")
    parser.add_argument("--time-scale", type=float, default=0.1, help="with --simulate: step time factor")
    parser.add_argument(
        "--in-flight",
        type=int,
        nargs="+",
        default=[8],
        help="flow runs with this many task runs (batches of 32) at once; the flows use 8",
    )
    parser.add_argument("--again", action="store_true", help="a bare run before the flows too (drift)")
    args = parser.parse_args()
    if args.simulate:
        name, model = "fake", SIMULATED
        backends._loaded[(name, model)] = metered(SimBackend(args.time_scale))
    else:
        name, model = "transformers", EMBEDDED_MODEL
    backend = get_backend(name, model)
    # Each instruction once, numbered: the engine samples copies of one prompt in one call each with
    # a stream of its own, so repeated prompts would make the bare run's texts differ from the flow's.
    asks = [p[-1]["content"] for p in bench_prompts(args.rows)]
    rows = [
        {"id": str(i), "seed_id": "bench", "instruction": f"Question {i + 1}. {a}"}
        for i, a in enumerate(asks)
    ]
    prompts = [build_messages(row, TEMPLATE) for row in rows]
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9)

    def tagged(tag: str) -> list[dict]:  # distinct ids per run: nothing comes from another run's cache
        return [{**row, "id": f"{tag}-{row['id']}"} for row in rows]

    # Warm up: server started, model loaded, the first pages of the slot cache taken.
    in_flow(tagged("warm")[:8], params.model_copy(update={"max_new_tokens": 4}), model, name, 8, backend)
    sent: list = []
    inner = backend.generate
    backend.generate = lambda ps, p: (sent.extend(ps) if p.seed == params.seed else None) or inner(ps, p)
    results = (
        [{**bare(backend, prompts, params), "run": "bare engine, before", "texts": None}]
        if args.again
        else []
    )
    for k, in_flight in enumerate(args.in_flight):  # the flows first: a first run pays for fresh memory
        sent.clear()
        results.append(in_flow(tagged(f"r{k}"), params, model, name, in_flight, backend))
        assert Counter(map(json.dumps, sent)) == Counter(map(json.dumps, prompts)), (
            "the flow sent other prompts"
        )
    results.append(bare(backend, prompts, params))
    backend.generate = inner
    bare_runs = [r["tok_s"] for r in results if r["run"].startswith("bare")]
    reference = sum(bare_runs) / len(bare_runs)
    bare_texts = results[-1]["texts"]
    flows = [r.pop("texts") for r in results if r["run"].startswith("flow")]
    same = sum(bare_texts[i] == t for texts in flows for i, t in texts.items())
    compared = sum(len(texts) for texts in flows)
    for r in results:
        r.pop("texts", None)
    for r in results:
        share = (
            f", {100 * r['tok_s'] / reference:5.1f}% of the bare engine"
            if r["run"].startswith("flow")
            else ""
        )
        r["share_of_bare"] = round(r["tok_s"] / reference, 3)
        print(
            f"{r['run']:<32} {r['tok_s']:8.1f} tok/s{share}, {r['rows_per_step']:6.1f} rows per decode step "
            f"({backend.engine.max_slots} slots), {r['seconds']} s, {r['completion_tokens']:,} tokens"
        )
    print(f"responses the same as the bare engine's: {same} of {compared} (each flow's first draws)")
    print(
        json.dumps(
            {
                "rows": args.rows,
                "max_new_tokens": args.max_new_tokens,
                "simulated": args.simulate,
                "same_as_bare": same,
                "compared": compared,
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
