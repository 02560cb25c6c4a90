"""How full the decode batch stays inside a real flow, by how many task runs it keeps in flight.

    python bench/flow_occupancy.py                       # 512 rows, 8 and 16 task runs
    python bench/flow_occupancy.py --rows 128 --workers 8 16 --max-new-tokens 64   # a quick look

The response stage runs as the flows run it: batches of 32 rows, each a Prefect task run through the
real technique task, W of them at a time, on the embedded model, sampled as the flows sample. A task
run hands its 32 prompts to the engine and holds its place until its longest answer ends; with 8
in flight (256 rows, the engine's slot count) nothing waits in the engine's queue, so every slot a
short answer frees stays empty until its whole batch is done. Prints, for each W, tokens/s and the
decode batch's average rows per step; the last line is one JSON object.
"""

import os

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import tasks  # noqa: E402, F401  (first: Prefect defaults before prefect is imported)

# isort: split
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefect import flow  # noqa: E402
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prompt_set import bench_prompts  # noqa: E402

from tasks.backends import GenerationParams, get_backend  # noqa: E402
from tasks.backends.embedded import EMBEDDED_MODEL  # noqa: E402
from tasks.pipeline.batching import map_batches  # noqa: E402
from tasks.respond import generate_responses  # noqa: E402


@flow(name="bench-flow-occupancy")
def respond_rows(rows: list[dict], params: GenerationParams) -> int:
    out = map_batches(
        generate_responses, rows, 32, params=params, model=EMBEDDED_MODEL, backend="transformers"
    )
    return len(out["rows"]) + len(out["drops"])


def run(rows: list[dict], workers: int, params: GenerationParams, engine) -> dict:
    before = dict(engine.stats)
    with tempfile.TemporaryDirectory() as tmp, temporary_settings({PREFECT_LOCAL_STORAGE_PATH: Path(tmp)}):
        start = time.perf_counter()
        done = respond_rows.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))(rows, params)
        elapsed = time.perf_counter() - start
    assert done == len(rows)
    steps, row_steps = (engine.stats[k] - before[k] for k in ("steps", "row_steps"))
    tokens = row_steps + len(rows)  # a token per running row per step, and each row's first
    return {
        "workers": workers,
        "seconds": round(elapsed, 1),
        "tok_s": round(tokens / elapsed, 1),
        "rows_per_step": round(row_steps / max(steps, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    backend = get_backend("transformers", EMBEDDED_MODEL)
    instructions = [p[-1]["content"] for p in bench_prompts(args.rows)]
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9)
    warm = [{"id": f"warm{i}", "seed_id": "bench", "instruction": "Say hello."} for i in range(2)]
    with tempfile.TemporaryDirectory() as tmp, temporary_settings({PREFECT_LOCAL_STORAGE_PATH: Path(tmp)}):
        respond_rows(warm, params.model_copy(update={"max_new_tokens": 4}))  # server up, model loaded
    results = []
    for workers in args.workers:
        # distinct ids per run: nothing is served from another run's cache
        rows = [
            {"id": f"w{workers}-{i}", "seed_id": "bench", "instruction": text}
            for i, text in enumerate(instructions)
        ]
        results.append(run(rows, workers, params, backend.engine))
        r = results[-1]
        print(
            f"{workers:3d} task runs in flight: {r['tok_s']:7.1f} tok/s, {r['rows_per_step']:6.1f} rows per "
            f"decode step ({backend.engine.max_slots} slots), {r['seconds']} s for {args.rows} rows"
        )
    print(json.dumps({"rows": args.rows, "max_new_tokens": args.max_new_tokens, "runs": results}))


if __name__ == "__main__":
    main()
