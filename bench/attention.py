"""A decode step's attention against its products, at a model's shapes.

    python bench/attention.py --models SmolLM2-360M:256 SmolLM2-1.7B:83 Llama-3.2-1B:128

For each model (`name:rows`): the C kernel's attention over every layer for `rows` rows at
positions spread as in a run of 256 new tokens (40 to 295, seeded), against the same step's
products (bench/kernel_ab.py's `StepProducts`), alternated for --rounds rounds, with the keys'
and values' bytes read and the rate they came at, and the same attention over the cache in bf16
(what `INSTRUCTFORGE_DTYPE=bf16` keeps, half the bytes); then this machine's memory read and copy
rates. The attention reads every row's keys and values once a step, from memory, and the ceiling
(bench/sizes.py: the weights' FLOPs at the matmul peak) does not count it: a model whose cache
holds many bytes a position (few shared KV heads) spends that share of a step outside the ceiling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel_ab import StepProducts  # noqa: E402
from random_models import model_config  # noqa: E402

from tasks.backends.embedded import cache_root  # noqa: E402
from tasks.backends.engine import kernels  # noqa: E402


def attention_share(lib, name: str, rows: int, rounds: int) -> str:
    config = model_config(name)
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads, kv_heads, layers = config.num_attention_heads, config.num_key_value_heads, config.num_hidden_layers
    lengths = torch.randint(40, 296, (rows,), generator=torch.Generator().manual_seed(0))
    keys = torch.randn(layers, rows, kv_heads, 296, dim)
    values = torch.randn_like(keys)
    q, k = torch.randn(rows, heads, 1, dim), torch.randn(rows, kv_heads, 1, dim)
    halves = keys.bfloat16(), values.bfloat16()  # the cache bf16 weights keep
    products = StepProducts(lib, name, rows)

    def attention(keys, values) -> float:
        start = time.perf_counter()
        for layer in range(layers):
            kernels.decode_attention(
                lib, q, k, k, keys[layer], values[layer], lengths, dim**-0.5, None, layer
            )
        return time.perf_counter() - start

    spent, used, half = 0.0, 0.0, 0.0
    for _ in range(rounds):
        spent += attention(keys, values)
        used += products.seconds(lib)
        half += attention(*halves)
    read = 2 * int(lengths.sum()) * kv_heads * dim * 4 * layers
    return (
        f"{name}: {rows} rows, mean position {lengths.float().mean():.0f}: "
        f"attention {spent / rounds * 1e3:.0f} ms a step ({read / 1e9:.2f} GB of keys and values at "
        f"{read * rounds / spent / 1e9:.1f} GB/s), "
        f"products {used / rounds * 1e3:.0f} ms; attention {spent / (spent + used):.0%} of the two; "
        f"with a bf16 cache {half / rounds * 1e3:.0f} ms ({read / 2 * rounds / half / 1e9:.1f} GB/s)"
    )


def memory_rates() -> tuple[float, float]:
    """GB/s read by the fastest of five sums over 1 GB, and read and written by the fastest of
    five 1 GB copies."""
    a, b = torch.ones(2**28), torch.empty(2**28)
    read = copied = 0.0
    for _ in range(5):
        start = time.perf_counter()
        a.sum()
        read = max(read, a.numel() * 4 / (time.perf_counter() - start) / 1e9)
        start = time.perf_counter()
        b.copy_(a)
        copied = max(copied, 2 * a.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return read, copied


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["SmolLM2-360M:256", "SmolLM2-1.7B:83"])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    lib = kernels.kernel(cache_root() / "kernels")
    if lib is None or not lib.linear_available():
        sys.exit("The C kernel needs a C compiler and AVX-512 here; the engine uses oneDNN on this CPU.")
    for spec in args.models:
        name, _, rows = spec.partition(":")
        print(attention_share(lib, name, int(rows or 128), args.rounds), flush=True)
    read, copied = memory_rates()
    print(f"memory: {read:.1f} GB/s read (a sum), {copied:.1f} GB/s copied (read and written)")


if __name__ == "__main__":
    main()
