"""The layer products of the bench's model sizes at decode row counts, cold weights: the engine's C
kernel (linear.c) against oneDNN with packed weights and torch's default `F.linear`, fp32, in one
process, so the figures compare as ratios.

    python bench/products.py                          # every distinct shape of bench/random_models.py
    python bench/products.py --models Llama-3.2-1B --rows 32 256
    python bench/products.py --library old.so         # a kernel library built from other sources

A decode step reads every layer's weights once, none of them still cached from the step before, so
each product here cycles through enough copies of its weight (at least --cold-mb in all) that
none is in the CPU's caches when it is used again. `--library` loads another build of the kernels
(`cc -O3 -march=native -fno-math-errno -fPIC -shared -fopenmp tasks/backends/engine/csrc/*.c -o
old.so -lm`, from an older commit's csrc): how docs/engine.md measured the kernel before and after
a change, side by side in one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from random_models import CONFIGS, model_config  # noqa: E402

from tasks.backends.embedded import cache_root  # noqa: E402
from tasks.backends.engine import kernels  # noqa: E402
from tasks.backends.engine.matmul import onednn_available, pack, packed_linear  # noqa: E402


def shapes(name: str) -> list[tuple[str, int, int]]:
    """(which, out features, in features) of a model's distinct layer products."""
    c = model_config(name)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    found = {
        (q, c.hidden_size): "q",
        (kv, c.hidden_size): "k, v",
        (c.hidden_size, q): "o",
        (c.intermediate_size, c.hidden_size): "gate, up",
        (c.hidden_size, c.intermediate_size): "down",
    }
    return [(which, n, k) for (n, k), which in found.items()]


def gflops(run, m: int, n: int, k: int, copies: int, repeats: int = 3) -> float:
    """Best GFLOP/s of `repeats` passes over the weight copies."""
    best = 0.0
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(copies):
                run(i)
            best = max(best, 2 * m * n * k * copies / (time.perf_counter() - start) / 1e9)
    return best


def products(lib, n: int, k: int, rows: list[int], cold_mb: float) -> dict[int, dict[str, float]]:
    """GFLOP/s of [m, k] x [k, n] per row count m, per way, over enough weight copies to be cold."""
    copies = max(2, min(200, int(cold_mb * 2**20 // (4 * n * k))))
    weights = [torch.randn(n, k) for _ in range(copies)]
    ways = {"kernel": [kernels.linear_pack(lib, w) for w in weights]}
    if onednn_available():
        ways["onednn"] = [pack(w) for w in weights]
    found = {}
    for m in rows:
        x = torch.randn(m, k)
        runs = {
            "kernel": lambda i, x=x: kernels.linear(lib, x, ways["kernel"][i], n),
            "onednn": lambda i, x=x: packed_linear(x, ways["onednn"][i]),
            "torch": lambda i, x=x: F.linear(x, weights[i]),
        }
        found[m] = {
            way: gflops(run, m, n, k, copies) for way, run in runs.items() if way in ways or way == "torch"
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rows", nargs="+", type=int, default=[32, 64, 128, 256])
    parser.add_argument("--library", type=Path, help="a kernel library to load instead of the engine's")
    parser.add_argument("--cold-mb", type=float, default=640.0, help="weight copies per shape, in MB")
    args = parser.parse_args()
    lib = kernels.load(args.library) if args.library else kernels.kernel(cache_root() / "kernels")
    if lib is None or not lib.linear_available():
        sys.exit("The C kernel needs a C compiler and AVX-512 here; the engine uses oneDNN on this CPU.")
    print(f"{torch.get_num_threads()} threads; GFLOP/s, best of 3 passes over cold weights", flush=True)
    seen = set()
    for name in args.models:
        for which, n, k in shapes(name):
            if (n, k) in seen:
                continue
            seen.add((n, k))
            for m, rates in products(lib, n, k, args.rows, args.cold_mb).items():
                line = ", ".join(f"{way} {rate:.0f}" for way, rate in rates.items())
                print(f"{name} {which} [{n} x {k}], {m} rows: {line}", flush=True)


if __name__ == "__main__":
    main()
