"""bf16 weights with their bf16 KV cache against the same engine holding an fp32 cache, in one
process, alternated (by hand; needs a CPU with AVX-512 BF16 or AMX):

    python bench/kv_cache.py --model SmolLM2-1.7B --prompts 128 --max-new-tokens 256

`INSTRUCTFORGE_DTYPE=bf16` keeps keys and values in bf16 (`SlotModel.kv_dtype`): a decode step's
attention reads every running row's cache once, so half the bytes a position is less time a
step, and the same memory budget holds twice the slots. This runs the bench's greedy prompts on a
random-weight model (bench/random_models.py) both ways, each on a fresh backend (so each plans
its own cache), and prints tokens/s, the slots each cache held, and how many greedy outputs the
cache's rounding changed (a random model's scores are nearly tied: most of them).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import tasks  # noqa: E402, F401  (first: Prefect defaults before prefect is imported)

# isort: split
import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prompt_set import bench_prompts  # noqa: E402
from random_models import random_model  # noqa: E402
from sizes import EMBEDDED, SIZES, engine_tokens, first_difference, release  # noqa: E402

from tasks.backends import GenerationParams  # noqa: E402
from tasks.backends.engine.matmul import bf16_refusal  # noqa: E402
from tasks.backends.transformers_backend import TransformersBackend  # noqa: E402


def run(path: str, cache: str, prompts: int, params: GenerationParams) -> tuple[float, list, str]:
    backend = TransformersBackend(path, dtype="bf16")
    if cache == "fp32":  # before the first request: the cache is planned and made at it
        backend.engine.net.kv_dtype = torch.float32
    ids = [
        backend.tokenizer(backend.render(p), add_special_tokens=False)["input_ids"]
        for p in bench_prompts(prompts)
    ]
    engine_tokens(backend, ids[:2], params.model_copy(update={"max_new_tokens": 4}))  # warm up
    tok_s, outputs = engine_tokens(backend, ids, params)
    shape, dtype = backend.engine.cache.k.shape, backend.engine.cache.k.dtype
    release(backend)
    return tok_s, outputs, f"{shape[1]} slots of {shape[3]} positions, {dtype}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-1.7B", choices=[m for m in SIZES if m != EMBEDDED])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1, help="bf16 then fp32 cache, this many times")
    args = parser.parse_args()
    if refusal := bf16_refusal():
        sys.exit(refusal)
    path = str(random_model(args.model))
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    speeds: dict[str, list[float]] = {"bf16": [], "fp32": []}
    outputs = {}
    for _ in range(args.rounds):
        for cache in speeds:
            tok_s, outputs[cache], held = run(path, cache, args.prompts, params)
            gc.collect()  # the backend's cycles (its engine thread's), with its model and cache
            speeds[cache].append(tok_s)
            print(f"{args.model}, bf16 weights, {cache} cache: {tok_s:.1f} tok/s ({held})", flush=True)
    where = [first_difference(a, b) for a, b in zip(outputs["bf16"], outputs["fp32"])]
    differ = sorted(w for w in where if w is not None)
    best = {cache: max(values) for cache, values in speeds.items()}
    print(
        f"{args.model}: the bf16 cache {best['bf16'] / best['fp32']:.2f}x the fp32 cache's tokens/s "
        f"(best of {args.rounds}); greedy outputs differ on {len(differ)}/{len(where)} prompts"
    )


if __name__ == "__main__":
    main()
