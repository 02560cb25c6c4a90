"""Two builds of the engine's C kernels side by side on a decode step's products (or, with
--attention, its attention), interleaved.

    python bench/kernel_ab.py before.so                       # against the engine's own build
    python bench/kernel_ab.py before.so after.so --models SmolLM2-360M --rows 8 256
    python bench/kernel_ab.py before.so --attention --models SmolLM2-360M Qwen2.5-0.5B --rows 256

For each model and row count: every layer's products in a decode step's order, q/k/v as one product
and gate/up as one (the engine runs the seven apart, with their element-wise steps; fused,
SmolLM2-360M's at 256 rows ran 3% faster in one interleaved measurement, 2026-12-05), each naming
the next as the engine does, with weights of their own per layer, so they come from memory as in a
real step. The two builds run whole steps in turn, ABBA..., for --rounds rounds, and the time
summed over all of them gives the ratio. This machine's speed moves from minute to minute (another
process, a host that holds a virtual CPU back); alternating step by step puts the same moves on
both sides, where two runs one after the other (or bench/products.py's best of 3) do not. Build the
other library from another commit's csrc:

    cc -O3 -march=native -fno-math-errno -fPIC -shared -fopenmp csrc/*.c -o before.so -lm

--attention times every layer's attention of one step instead, rows at positions 40-295 as in a
run of 256 new tokens (bench/attention.py's), over an fp32 cache and a bf16 one, and checks that
the two builds' results are bit-identical; both builds must have this commit's interface
(csrc/kernels.h). --generate P runs whole greedy generations instead: the bench's first P prompts
through the engine on a fresh backend with each build in turn (ABBA..., --rounds of them, after
one untimed run of the first build; weights as --dtype), and prints each build's tokens/s and
whether their outputs are equal; `--models embedded` runs the default model there:

    python bench/kernel_ab.py before.so --generate 256 --max-new-tokens 256 --dtype bf16 --rounds 2 \
        --models SmolLM2-360M
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from random_models import CONFIGS, model_config  # noqa: E402

from tasks.backends.embedded import cache_root, embedded_model_dir  # noqa: E402
from tasks.backends.engine import kernels  # noqa: E402


def step_products(name: str) -> list[tuple[int, int]]:
    """(out, in) of one layer's products, in a decode step's order."""
    c = model_config(name)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    h, i = c.hidden_size, c.intermediate_size
    return [(q + 2 * kv, h), (h, q), (2 * i, h), (h, i)]


class StepProducts:
    """Every layer's products of a decode step of `name` at `rows` rows, weights packed by `lib`
    (random: their values do not change the time), each layer's its own, so they come from memory."""

    def __init__(self, lib, name: str, rows: int) -> None:
        layers = model_config(name).num_hidden_layers
        self.packed = [
            (kernels.linear_pack(lib, torch.randn(n, k)), n, k)
            for _ in range(layers)
            for n, k in step_products(name)
        ]
        self.rows = rows
        self.inputs = {k: torch.randn(rows, k) for _, _, k in self.packed}
        self.outputs = {n: torch.empty(rows, n) for _, n, _ in self.packed}
        self.flops = sum(2 * rows * n * k for _, n, k in self.packed)

    def seconds(self, lib) -> float:
        """One step's products through `lib`, each naming the next (as the engine does)."""
        packed, threads, start = self.packed, torch.get_num_threads(), time.perf_counter()
        for j, (weight, n, k) in enumerate(packed):
            then = packed[j + 1] if j + 1 < len(packed) else None
            lib.linear(
                self.inputs[k].data_ptr(), weight.data_ptr(), None, None, self.outputs[n].data_ptr(),
                self.rows, k, n, 0, threads, then[0].data_ptr() if then else None,
                then[1] if then else 0, then[2] if then else 0, weight.dtype == torch.bfloat16,
            )  # fmt: skip
        return time.perf_counter() - start


def compare(libs: dict[str, object], name: str, rows: int, rounds: int) -> dict[str, float]:
    """GFLOP/s of each library over `rounds` interleaved decode steps' products."""
    step = StepProducts(next(iter(libs.values())), name, rows)
    names = list(libs)
    seconds = dict.fromkeys(names, 0.0)
    for r in range(rounds):
        for which in names if r % 2 == 0 else names[::-1]:
            seconds[which] += step.seconds(libs[which])
    return {which: step.flops * rounds / s / 1e9 for which, s in seconds.items()}


class StepAttention:
    """Every layer's attention of a decode step of `name` at `rows` rows over a cache of `dtype`."""

    def __init__(self, name: str, rows: int, dtype: torch.dtype) -> None:
        c = model_config(name)
        self.dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.layers, heads, kv_heads = c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
        self.lengths = torch.randint(40, 296, (rows,), generator=torch.Generator().manual_seed(0))
        shape = (self.layers, rows, kv_heads, 296, self.dim)
        self.keys, self.values = (torch.randn(shape).to(dtype) for _ in "kv")
        self.q, self.k = torch.randn(rows, heads, 1, self.dim), torch.randn(rows, kv_heads, 1, self.dim)

    def run(self, lib, layer: int) -> torch.Tensor:
        return kernels.decode_attention(
            lib, self.q, self.k, self.k, self.keys[layer], self.values[layer], self.lengths,
            self.dim**-0.5, None, layer,
        )  # fmt: skip

    def seconds(self, lib) -> float:
        start = time.perf_counter()
        for layer in range(self.layers):
            self.run(lib, layer)
        return time.perf_counter() - start


def compare_attention(libs: dict[str, object], name: str, rows: int, rounds: int) -> str:
    """Each library's ms a step over `rounds` interleaved steps, fp32 and bf16 caches."""
    names, said = list(libs), []
    for dtype in (torch.float32, torch.bfloat16):
        step = StepAttention(name, rows, dtype)
        same = torch.equal(*(step.run(libs[which], 0) for which in names))
        seconds = dict.fromkeys(names, 0.0)
        for r in range(rounds):
            for which in names if r % 2 == 0 else names[::-1]:
                seconds[which] += step.seconds(libs[which])
        a, b = (seconds[which] / rounds * 1e3 for which in names)
        kind = str(dtype).removeprefix("torch.")
        said.append(
            f"{kind} cache a {a:.1f} ms, b {b:.1f} ms, b/a {b / a:.3f}{'' if same else ' (results DIFFER)'}"
        )
        del step  # before the next cache is made: a 1.7B model's fp32 cache of 83 rows is 10 GB
    return "; ".join(said)


def compare_generation(
    libs: dict[str, object], name: str, prompts: int, new_tokens: int, dtype: str, rounds: int
) -> str:
    """Each library's mean tokens/s over `rounds` alternated whole runs of `prompts` greedy prompts."""
    from prompt_set import bench_prompts
    from random_models import random_model
    from sizes import engine_tokens, release

    from tasks.backends import GenerationParams
    from tasks.backends.transformers_backend import TransformersBackend

    path = str(embedded_model_dir() if name == "embedded" else random_model(name))
    names = list(libs)
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0)
    speeds, outputs = {which: [] for which in names}, {}
    # round -1, untimed: the process's first run takes memory pages and warms what later runs reuse
    for r in range(-1, rounds):
        for which in (names if r % 2 == 0 else names[::-1]) if r >= 0 else names[:1]:
            kernels.use(libs[which])
            backend = TransformersBackend(path, dtype=dtype)
            ids = [
                backend.tokenizer(backend.render(p), add_special_tokens=False)["input_ids"]
                for p in bench_prompts(prompts)
            ]
            engine_tokens(backend, ids[:2], params.model_copy(update={"max_new_tokens": 4}))  # warm up
            tok_s, outputs[which] = engine_tokens(backend, ids, params)
            release(backend)
            if r >= 0:
                speeds[which].append(tok_s)
    a, b = (sum(speeds[which]) / rounds for which in names)
    same = "equal" if outputs[names[0]] == outputs[names[1]] else "DIFFERENT"
    return f"{dtype} weights, a {a:.1f} tok/s, b {b:.1f} tok/s, b/a {b / a:.3f}; greedy outputs {same}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "libraries", nargs="+", type=Path, help="one or two builds (one: against the engine's)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["SmolLM2-360M", "Llama-3.2-1B"],
        choices=[*CONFIGS, "embedded"],
        help="random-weight models; with --generate also `embedded`, the default model",
    )
    parser.add_argument("--rows", nargs="+", type=int, default=[8, 64, 256])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--attention", action="store_true", help="time the attention, not the products")
    parser.add_argument("--generate", type=int, metavar="P", help="whole runs of P prompts, not a step")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="with --generate")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="with --generate")
    args = parser.parse_args()
    if "embedded" in args.models and not args.generate:
        parser.error("--models embedded goes with --generate (the step timings build random models)")
    if len(args.libraries) > 2:
        parser.error("give one library (compared with the engine's build) or two")
    libs = {str(path): kernels.load(path) for path in args.libraries}
    if len(libs) == 1:
        libs["engine"] = kernels.kernel(cache_root() / "kernels")
    # the attention runs on any build (an AVX2 one too: -mno-avx512f); the products need AVX-512
    if any(lib is None or not (args.attention or lib.linear_available()) for lib in libs.values()):
        sys.exit("The C kernel needs a C compiler and AVX-512 here; the engine uses oneDNN on this CPU.")
    a, b = libs
    if args.generate:
        print(f"{torch.get_num_threads()} threads; whole runs, {args.rounds} alternated; b = {b}, a = {a}")
        for name in args.models:
            said = compare_generation(libs, name, args.generate, args.max_new_tokens, args.dtype, args.rounds)
            print(f"{name}, {args.generate} prompts x {args.max_new_tokens} tokens: {said}", flush=True)
        return
    unit = "ms a step's attention" if args.attention else "GFLOP/s"
    print(f"{torch.get_num_threads()} threads; {unit} over {args.rounds} interleaved steps; b = {b}, a = {a}")
    for name in args.models:
        for rows in args.rows:
            if args.attention:
                print(f"{name}, {rows} rows: {compare_attention(libs, name, rows, args.rounds)}", flush=True)
                continue
            rates = compare(libs, name, rows, args.rounds)
            print(
                f"{name}, {rows} rows: a {rates[a]:.1f}, b {rates[b]:.1f}, b/a {rates[b] / rates[a]:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
