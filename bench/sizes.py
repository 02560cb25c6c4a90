"""The engine on the model sizes users run on CPUs (random weights, bench/random_models.py), fp32
and bf16 side by side, each model in a process of its own so peak memory is its own.

    python bench/sizes.py                                   # every model, default sizes
    python bench/sizes.py --models SmolLM2-1.7B --prompts 32 --max-new-tokens 64

For each model, in one process: the fp32 matmul peak of this CPU and the ceiling it implies
(bench/generation.py's, 2 x parameters FLOPs a token; the peak measured again after the fp32 run,
and the higher of the two used); one prompt at a time through `generate`
(the naive baseline, fp32, on --naive-prompts prompts, the better of 1 thread and the default);
the engine in fp32 on all prompts (greedy), then the engine with bf16 weights
(INSTRUCTFORGE_DTYPE=bf16) on the same prompts: tokens/s, the fraction of the fp32 ceiling (and
for fp32 the same for the decode steps alone and for all the work, prompt positions included), the
speedup over the baseline, peak resident memory of each (the peak is reset between them), whether
greedy outputs equal the baseline's, and how many bf16 outputs differ from fp32's and at which
token; and the largest slot count (of prompt + --max-new-tokens positions) the memory estimate
(tasks/backends/engine/cache_size.py) lets fit in the memory available when the process started.
A model or slot count that does not fit is refused before loading, with the numbers. The last line
is one JSON object per model.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script; a test importing it keeps its own logging
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import tasks  # noqa: E402, F401  (first: Prefect defaults before prefect is imported)

# isort: split
import argparse
import atexit
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generation import matmul_peak, naive  # noqa: E402
from prompt_set import bench_prompts  # noqa: E402
from random_models import model_config, random_model  # noqa: E402
from transformers import AutoConfig  # noqa: E402

from tasks.backends import GenerationParams  # noqa: E402
from tasks.backends.embedded import embedded_model_dir  # noqa: E402
from tasks.backends.engine import Request, RowSampler, cache_size, on_own_thread  # noqa: E402
from tasks.backends.engine.matmul import bf16_refusal, kernel_products  # noqa: E402
from tasks.backends.transformers_backend import TransformersBackend  # noqa: E402

# the embedded model, with trained weights: where bf16's differences from fp32 are the ones users get
# (a random model's next-token scores are nearly tied, so any rounding flips its greedy choice)
EMBEDDED = "SmolLM2-135M-Instruct"
# prompts x new tokens per model: as many prompts as a dataset job keeps in flight (the engine's
# 256 slots up to 0.5B; 128 above, where a step's rows already outweigh its weight reads), fewer
# new tokens for the big ones so each model runs in a few minutes here
SIZES = {
    EMBEDDED: (128, 128),
    "SmolLM2-360M": (256, 96),
    "Qwen2.5-0.5B": (256, 96),
    "Llama-3.2-1B": (128, 64),
    "Qwen2.5-1.5B": (128, 64),
    "SmolLM2-1.7B": (128, 64),
}


def peak_mb() -> float:
    """Peak resident memory since the last `reset_peak` (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak resident set size


def engine_tokens(backend, ids: list[list[int]], params: GenerationParams) -> tuple[float, list[list[int]]]:
    """Tokens/s and the token ids of greedy rows through the engine (ids, not texts: a random
    model's vocabulary can be larger than the tokenizer's, whose ids outside it decode to nothing).
    `engine_tokens.last` keeps the run's counters: seconds, decode steps' rows and seconds, prefill
    positions and seconds."""
    requests = [Request(seq, params.max_new_tokens, RowSampler.create(params, seq), ()) for seq in ids]
    stats, start = dict(backend.engine.stats), time.perf_counter()
    outputs = [f.result()[0] for f in backend.engine.submit(requests)]
    elapsed = time.perf_counter() - start
    stats = {key: backend.engine.stats[key] - stats[key] for key in stats}
    print(
        f"  {len(ids)} prompts: {elapsed:.1f} s, of it decode steps {stats['decode_s']:.1f} s "
        f"({stats['row_steps'] / max(stats['decode_s'], 1e-9):.0f} tok/s while decoding, "
        f"{stats['row_steps'] / max(stats['steps'], 1):.0f} rows a step), prefill {stats['prefill_s']:.1f} s "
        f"({stats['prefill_tokens']} positions)",
        flush=True,
    )
    engine_tokens.last = stats | {"elapsed": elapsed}
    return sum(map(len, outputs)) / elapsed, outputs


def work_shares(stats: dict, generated: int, ceiling: float) -> dict:
    """The fp32 run against the ceiling two more ways: the decode steps alone (generated tokens
    over the time spent in them), and all the work (prompt positions prefilled plus generated
    tokens, over the whole run), since prefill costs about as many FLOPs a position as a decode
    step a row, and the ceiling counts generated tokens only."""
    decode = stats["row_steps"] / max(stats["decode_s"], 1e-9)
    work = (stats["prefill_tokens"] + generated) / stats["elapsed"]
    return {
        "fp32_decode_of_ceiling": round(decode / ceiling, 3),
        "fp32_work_of_ceiling": round(work / ceiling, 3),
        "prefill_share_of_time": round(stats["prefill_s"] / stats["elapsed"], 3),
    }


def release(backend) -> None:
    """Stop the backend's engine and drop the exit hook that keeps it (and its model) alive."""
    backend.engine.close()
    atexit.unregister(backend.engine.close)
    gc.collect()


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b))
    )


def run_model(name: str, prompts: int, new_tokens: int, naive_prompts: int, fp32_only: bool = False) -> dict:
    available = cache_size.available_memory()
    if name == EMBEDDED:
        path = str(embedded_model_dir())
        config = AutoConfig.from_pretrained(path)
    else:
        path, config = str(random_model(name)), model_config(name)
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0)
    count = sum(cache_size.parameter_counts(config))  # a tied head counted once
    peaks = on_own_thread(matmul_peak)
    ceiling = max(peaks.values()) * 1e9 / (2 * count)
    row = {
        "model": name,
        "parameters_m": round(count / 1e6),
        "prompts": prompts,
        "max_new_tokens": new_tokens,
    }
    row |= {"matmul_gflops": round(max(peaks.values()), 1), "ceiling_tok_s": round(ceiling, 1)}
    # the first look measured against torch's own fp32 matmul alone
    row["torch_ceiling_tok_s"] = round(peaks["torch"] * 1e9 / (2 * count), 1)
    row |= {f"matmul_gflops_{way}": round(gflops, 1) for way, gflops in peaks.items()}

    reset_peak()
    fp32 = TransformersBackend(path, dtype="fp32")  # slots as a user gets them: as many as fit
    # what the loaded model holds, and the KV cache's budget it leaves (cache_size.engine_budget)
    row["fp32_loaded_rss_mb"] = round(resident_mb())
    row["kv_budget_gb"] = round(fp32.engine.budget / 2**30, 1)
    chats = bench_prompts(prompts)
    ids = [fp32.tokenizer(fp32.render(p), add_special_tokens=False)["input_ids"] for p in chats]
    naive_tok_s, texts = on_own_thread(naive, fp32, chats[:naive_prompts], params)
    engine_tokens(fp32, ids[:2], params.model_copy(update={"max_new_tokens": 4}))  # warm up
    fp32_tok_s, fp32_out = engine_tokens(fp32, ids, params)
    # the peak again after the run: where the machine's speed moved meanwhile the two differ, and
    # the ceiling is the higher (the ratios below are then lower bounds)
    after = max(on_own_thread(matmul_peak).values())
    row["matmul_gflops_after"] = round(after, 1)
    if after > max(peaks.values()):
        ceiling = after * 1e9 / (2 * count)
        row["ceiling_tok_s"] = round(ceiling, 1)
    row |= {
        "naive_tok_s": round(naive_tok_s, 2),
        "fp32_tok_s": round(fp32_tok_s, 1),
        "fp32_of_ceiling": round(fp32_tok_s / ceiling, 3),
        "fp32_of_torch_ceiling": round(fp32_tok_s * 2 * count / peaks["torch"] / 1e9, 3),
        "fp32_speedup": round(fp32_tok_s / naive_tok_s, 1),
        **work_shares(engine_tokens.last, sum(map(len, fp32_out)), ceiling),
        "fp32_slots": fp32.engine.slots,
        "cache_length": fp32.engine.cache.length,  # as the engine allocated it (cache_size.plan)
        "fp32_peak_rss_mb": round(peak_mb()),
    }
    print(
        f"{name}: fp32 {fp32_tok_s:.1f} tok/s = {fp32_tok_s / ceiling:.0%} of the ceiling {ceiling:.1f}, "
        f"{fp32_tok_s / naive_tok_s:.1f}x naive {naive_tok_s:.2f}; peak {row['fp32_peak_rss_mb']} MB",
        flush=True,
    )
    # the baseline's texts against the engine's, on the prompts both ran
    engine_texts = [
        fp32.tokenizer.decode(t, skip_special_tokens=True).strip() for t in fp32_out[:naive_prompts]
    ]
    row["fp32_equal_naive"] = f"{sum(a == b for a, b in zip(texts, engine_texts))}/{len(texts)}"
    release(fp32)
    del fp32
    gc.collect()

    refusal = "skipped (--fp32-only)" if fp32_only else bf16_refusal()
    if refusal is None:
        row["rss_before_bf16_mb"] = round(resident_mb())  # what the fp32 run left: part of bf16's peak
        reset_peak()
        bf16 = TransformersBackend(path, dtype="bf16")
        engine_tokens(bf16, ids[:2], params.model_copy(update={"max_new_tokens": 4}))
        bf16_tok_s, bf16_out = engine_tokens(bf16, ids, params)
        where = [first_difference(a, b) for a, b in zip(fp32_out, bf16_out)]
        differ = sorted(w for w in where if w is not None)
        row |= {
            "bf16_tok_s": round(bf16_tok_s, 1),
            "bf16_over_fp32": round(bf16_tok_s / fp32_tok_s, 2),
            "bf16_of_fp32_ceiling": round(bf16_tok_s / ceiling, 3),
            "bf16_speedup": round(bf16_tok_s / naive_tok_s, 1),
            "bf16_peak_rss_mb": round(peak_mb()),
            "bf16_differs": f"{len(differ)}/{len(where)}",
            "bf16_first_difference_at": differ,
        }
        print(f"{name}: bf16 {bf16_tok_s:.1f} tok/s = {bf16_tok_s / fp32_tok_s:.2f}x fp32; greedy outputs "
              f"differ from fp32's on {len(differ)}/{len(where)} prompts, first at tokens {differ}; "
              f"peak {row['bf16_peak_rss_mb']} MB", flush=True)  # fmt: skip
        release(bf16)
    else:
        row["bf16"] = refusal
    length = row["cache_length"]
    kernel = kernel_products()  # fp32 through the C kernel holds each projection's weights once
    row["largest_slots_fp32"] = cache_size.largest_slots(config, length, "fp32", available, kernel=kernel)
    row["largest_slots_bf16"] = cache_size.largest_slots(config, length, "bf16", available)
    row["available_gb"] = round(available / 2**30, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--prompts", type=int, help="prompts per model (default: SIZES)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per prompt (default: SIZES)")
    parser.add_argument("--naive-prompts", type=int, default=1)
    parser.add_argument("--fp32-only", action="store_true", help="skip the bf16 run")
    parser.add_argument("--one", action="store_true", help="run the one --models model in this process")
    args = parser.parse_args()
    if args.one:
        [name] = args.models
        prompts, new_tokens = SIZES[name]
        row = run_model(
            name,
            args.prompts or prompts,
            args.max_new_tokens or new_tokens,
            args.naive_prompts,
            args.fp32_only,
        )
        print(json.dumps(row))
        return
    rows = []
    for name in args.models:
        command = [
            sys.executable,
            __file__,
            "--one",
            "--models",
            name,
            "--naive-prompts",
            str(args.naive_prompts),
            *(["--fp32-only"] if args.fp32_only else []),
        ]
        for flag, value in (("--prompts", args.prompts), ("--max-new-tokens", args.max_new_tokens)):
            command += [flag, str(value)] if value else []
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        lines = done.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        if done.returncode or not lines:
            print(f"{name}: failed (exit status {done.returncode})")
            continue
        rows.append(json.loads(lines[-1]))
    print()
    columns = [
        ("model", "model"), ("params M", "parameters_m"), ("peak GFLOP/s", "matmul_gflops"),
        ("peak after", "matmul_gflops_after"), ("ceiling tok/s", "ceiling_tok_s"),
        ("naive", "naive_tok_s"), ("fp32 tok/s", "fp32_tok_s"), ("of ceiling", "fp32_of_ceiling"),
        ("of torch ceiling", "fp32_of_torch_ceiling"), ("decode steps of ceiling", "fp32_decode_of_ceiling"),
        ("all work of ceiling", "fp32_work_of_ceiling"), ("prefill share", "prefill_share_of_time"),
        ("x naive", "fp32_speedup"), ("bf16 tok/s", "bf16_tok_s"), ("bf16/fp32", "bf16_over_fp32"),
        ("bf16 of fp32 ceiling", "bf16_of_fp32_ceiling"), ("bf16 differs", "bf16_differs"),
        ("loaded MB fp32", "fp32_loaded_rss_mb"), ("KV budget GB", "kv_budget_gb"),
        ("peak MB fp32", "fp32_peak_rss_mb"),
        ("peak MB bf16", "bf16_peak_rss_mb"), ("most slots fp32", "largest_slots_fp32"),
        ("most slots bf16", "largest_slots_bf16"),
    ]  # fmt: skip
    print("| " + " | ".join(title for title, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r.get(key, "-")) for _, key in columns) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
