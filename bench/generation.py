"""Generation speed on this machine, measured in one process so the numbers compare as ratios.

    python bench/generation.py            # or: make bench
    python bench/generation.py --prompts 16 --max-new-tokens 64    # a quick look

It prints, for a fixed prompt set (instructions built from the shipped seed passages, rendered as
the response step renders them; greedy; up to --max-new-tokens each):
1. the fp32 matmul peak of this CPU (the fastest of torch's default matmul, oneDNN with a packed
   weight and the engine's own C kernel) and the compute ceiling it implies, in generated tokens/s
   (a token costs about 2 x parameters FLOPs);
2. the naive baseline: one prompt at a time through `model.generate` (what distilabel's
   TransformersLLM does), on the first --naive-prompts prompts (its rate does not depend on how
   many), at 1 thread and at torch's default, keeping the faster;
3. our backend on all prompts, and whether its outputs equal the baseline's on the shared prompts;
   then the same run again (--again), on the slot cache pages the first run took: on this machine
   (a Firecracker VM) the first write to a page of memory the process has not held costs ~5 us,
   and a first run writes ~590,000 of them, so every later batch of a flow runs 2-10% faster than
   the first; then sampled (temperature 0.7, top-p 0.9, as the flows generate) on --sampled-prompts of them,
   and Magpie's instruction step (--magpie-rows user turns written from the chat template's
   pre-query prompt alone: temperature 1, top-p 1, up to 64 tokens, stopped at the end of the turn);
4. Prefect's overhead on a --flow-rows-row response run: the flow's wall time minus the time spent
   inside the backend, with a zero-cost backend, as a share of that plus the time our backend needs
   to generate those rows (an upper bound: with a real model, bookkeeping overlaps generation);
5. peak RSS, and how much the resident memory grew over the sampled run, which starts with the
   slot cache allocated at full size (rows only lengthen the queue); the cache's pages are taken
   as positions are first written, so that growth is at most the part of the reserved cache
   (printed) that no earlier row reached.
The last line is one JSON object, for comparing runs over time.
"""

import os

if __name__ == "__main__":  # run as a script; a test importing it keeps its own logging
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # task-run chatter would bury the table

import tasks  # noqa: E402, F401  (first: Prefect defaults before prefect is imported)

# isort: split
import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from prefect_overhead import prefect_overhead  # noqa: E402
from prompt_set import bench_prompts  # noqa: E402

from tasks.backends import GenerationParams, get_backend
from tasks.backends.embedded import EMBEDDED_MODEL, cache_root  # noqa: E402
from tasks.backends.engine import cache_size, kernels  # noqa: E402
from tasks.backends.engine.matmul import onednn_available, pack, packed_linear  # noqa: E402
from tasks.backends.engine.threads import on_own_thread  # noqa: E402
from tasks.magpie import pre_query_template  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()


def thread_counts() -> list[int]:
    return sorted({1, DEFAULT_THREADS})


def matmul_peak(size: int = 1536, seconds: float = 2.0) -> dict[str, float]:
    """Best fp32 GFLOP/s of square matmuls over a few seconds at each thread count (the best run is
    the least disturbed by other processes), through torch's default matmul, through oneDNN with
    the weight packed once, and through the engine's own C kernel (tasks/backends/engine/csrc/linear.c, where
    the CPU has AVX-512; the engine takes it first, then oneDNN: tasks/backends/engine/matmul.py). On CPUs
    not made by Intel the default runs MKL's AVX2 code and can reach half of what the cores do. The
    machine's peak is the fastest of them."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    ways = {"torch": lambda: a @ b}
    if onednn_available():
        packed = pack(b.t())  # a @ b = F.linear(a, b.t())
        ways["onednn"] = lambda: packed_linear(a, packed)
    lib = kernels.kernel(cache_root() / "kernels")  # the library the backend builds and caches
    if lib is not None and lib.linear_available():
        panels = kernels.linear_pack(lib, b.t())
        ways["kernel"] = lambda: kernels.linear(lib, a, panels, size)
    best = dict.fromkeys(ways, 0.0)
    with torch.inference_mode():
        for name, run in ways.items():
            for threads in thread_counts():
                torch.set_num_threads(threads)
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    start = time.perf_counter()
                    run()
                    best[name] = max(best[name], 2 * size**3 / (time.perf_counter() - start) / 1e9)
    torch.set_num_threads(DEFAULT_THREADS)
    return best


def naive(backend, prompts, params) -> tuple[float, list[str]]:
    """Tokens/s and texts of one prompt at a time through `generate` (no engine), at the better of
    1 thread and torch's default (distilabel gets the default; on shared cores 1 can be faster)."""
    rates = []
    # the weights lent back once for the whole baseline, not rebuilt for each prompt's call
    lent = backend.engine.module_weights() if backend.engine else contextlib.nullcontext()
    with lent:
        for threads in thread_counts():
            torch.set_num_threads(threads)
            tokens, texts, start = 0, [], time.perf_counter()
            for prompt in prompts:
                ids = backend.tokenizer(backend.render(prompt), add_special_tokens=False)["input_ids"]
                [gen] = backend._generate_hf([ids], params)
                tokens, texts = tokens + gen.completion_tokens, [*texts, gen.text]
            rates.append(tokens / (time.perf_counter() - start))
            print(f"naive, {threads} thread(s)  {rates[-1]:8.1f} tok/s  ({len(prompts)} prompts)")
    torch.set_num_threads(DEFAULT_THREADS)
    return max(rates), texts


def ours(backend, prompts, params) -> tuple[float, float, list[str]]:
    """Tokens/s, rows/s and texts of our backend on all prompts at once (as a flow's concurrent
    task runs submit them), with how full the decode batch was on average."""
    engine = backend.engine
    before = dict(engine.stats) if engine else {}
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    gens = backend.generate(prompts, params)
    elapsed = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    if engine:
        steps, rows, prefilled, decode_s, prefill_s = (
            engine.stats[k] - before[k]
            for k in ("steps", "row_steps", "prefill_tokens", "decode_s", "prefill_s")
        )
        prompt_tokens = sum(g.prompt_tokens for g in gens)
        print(
            f"  decode steps {steps}, {rows / max(steps, 1):.1f} rows per step on average "
            f"({engine.slots} slots); prefilled {prefilled} of {prompt_tokens} prompt tokens "
            "(the rest was a shared prefix)"
        )
        print(
            f"  of {elapsed:.1f} s: decode steps {decode_s:.1f} s ({rows / max(decode_s, 1e-9):.0f} tok/s "
            f"while decoding), prefill {prefill_s:.1f} s, the rest {elapsed - decode_s - prefill_s:.1f} s; "
            f"{faults} pages taken"
        )
    return sum(g.completion_tokens for g in gens) / elapsed, len(gens) / elapsed, [g.text for g in gens]


def magpie(backend, rows: int) -> float:
    """Tokens/s of Magpie's instruction step: `rows` user turns from one pre-query prompt."""
    query = pre_query_template(backend.tokenizer)
    params = GenerationParams(max_new_tokens=64, temperature=1.0, top_p=1.0, stop=query.stop)
    start = time.perf_counter()
    gens = backend.generate([query.prompt] * rows, params)
    return sum(g.completion_tokens for g in gens) / (time.perf_counter() - start)


def resident_mb() -> float:
    """Current resident memory (ru_maxrss is a peak, so it cannot show growth after one)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--naive-prompts", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--slots", type=int, default=None, help="engine slots (default: the backend's)")
    parser.add_argument("--flow-rows", type=int, default=1000)
    parser.add_argument(
        "--sampled-prompts", type=int, default=128, help="prompts for the sampled run (0: skip it)"
    )
    parser.add_argument(
        "--again", type=int, default=1, help="1: run ours a second time, on the memory it already holds"
    )
    parser.add_argument("--magpie-rows", type=int, default=256, help="rows of the Magpie run (0: skip it)")
    args = parser.parse_args()

    backend = get_backend("transformers", args.model)
    if args.slots:
        backend.engine.slots = backend.engine.max_slots = args.slots
        backend.engine.refill = max(1, args.slots // 8)
    prompts = bench_prompts(args.prompts)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    # from the config: the engine has taken the projections' weights off the modules (matmul.py)
    params_count = sum(cache_size.parameter_counts(backend.model.config))  # a tied head once
    flops_per_token = 2 * params_count

    # Torch work off the engine runs on threads that end (tasks/backends/engine/threads.py): a thread that
    # keeps an OpenMP pool makes every other thread's parallel ops wait for sleeping workers.
    peaks = on_own_thread(matmul_peak)
    peak = max(peaks.values())
    ceiling = peak * 1e9 / flops_per_token
    print(f"threads {torch.get_num_threads()}; model {args.model}: {params_count / 1e6:.0f}M parameters")
    ways = ", ".join(f"{name} {gflops:.1f}" for name, gflops in peaks.items())
    print(f"fp32 matmul peak      {peak:8.1f} GFLOP/s ({ways}) -> ceiling {ceiling:7.1f} tok/s")
    naive_tok_s, naive_texts = on_own_thread(naive, backend, prompts[: args.naive_prompts], params)
    backend.generate(prompts[:2], params.model_copy(update={"max_new_tokens": 4}))  # warm up, allocate
    print(f"naive (1 at a time)   {naive_tok_s:8.1f} tok/s  (the better thread count)")
    ours_tok_s, rows_s, texts = ours(backend, prompts, params)
    resident, growth = resident_mb(), None
    same = sum(a == b for a, b in zip(naive_texts, texts))
    print(
        f"ours ({backend.engine.slots if backend.engine else backend.batch_size} slots)       "
        f"{ours_tok_s:8.1f} tok/s  {rows_s:.2f} rows/s  ({len(prompts)} prompts)"
    )
    print(
        f"  = {ours_tok_s / naive_tok_s:.1f}x naive, {ours_tok_s / ceiling:.1%} of the ceiling; "
        f"outputs equal to naive on {same}/{len(naive_texts)} prompts"
    )
    again_tok_s = None
    if args.again:  # the same run on memory the engine already holds, as every later batch runs
        again_tok_s, _, again = ours(backend, prompts, params)
        print(
            f"ours, again            {again_tok_s:8.1f} tok/s  (the same prompts, slot cache pages already "
            f"taken) = {again_tok_s / ceiling:.1%} of the ceiling; "
            f"{sum(a == b for a, b in zip(texts, again))}/{len(texts)} outputs as the first time"
        )
    sampled_tok_s = None
    if args.sampled_prompts:  # what the flows run: temperature 0.7, top-p 0.9
        sampling = params.model_copy(update={"temperature": 0.7, "top_p": 0.9})
        sampled_tok_s, _, _ = ours(backend, prompts[: args.sampled_prompts], sampling)
        growth = resident_mb() - resident
        print(
            f"ours, sampled          {sampled_tok_s:8.1f} tok/s  (temperature 0.7, top-p 0.9; "
            f"{args.sampled_prompts} prompts) = {sampled_tok_s / naive_tok_s:.1f}x naive greedy"
        )
    magpie_tok_s = None
    if args.magpie_rows:
        magpie_tok_s = magpie(backend, args.magpie_rows)
        print(
            f"ours, Magpie           {magpie_tok_s:8.1f} tok/s  (user turns from the pre-query prompt; "
            f"temperature 1, top-p 1; {args.magpie_rows} rows)"
        )
    gen_s = args.flow_rows / rows_s
    with tempfile.TemporaryDirectory() as tmp:
        overhead_s = prefect_overhead(args.flow_rows, Path(tmp))
    share = overhead_s / (overhead_s + gen_s)
    print(
        f"prefect overhead      {overhead_s:8.1f} s on {args.flow_rows} rows = {share:.1%} of a "
        f"{overhead_s + gen_s:.0f} s run"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cache = backend.engine.cache if backend.engine else None
    reserved = (
        ""
        if cache is None
        else f" of a {2 * cache.k.numel() * cache.k.element_size() / 2**20:.0f} MB slot cache"
    )
    grew = "" if growth is None else f"; resident memory grew {growth:.0f} MB over the sampled run{reserved}"
    print(f"peak RSS              {rss:8.0f} MB{grew}")
    print(
        json.dumps(
            {
                "ceiling_tok_s": round(ceiling, 1),
                "matmul_gflops": round(peak, 1),
                **{f"matmul_gflops_{name}": round(gflops, 1) for name, gflops in peaks.items()},
                "naive_tok_s": round(naive_tok_s, 2),
                "ours_tok_s": round(ours_tok_s, 1),
                "ours_rows_s": round(rows_s, 3),
                "ours_again_tok_s": again_tok_s and round(again_tok_s, 1),
                "fraction_of_ceiling_again": again_tok_s and round(again_tok_s / ceiling, 3),
                "ours_sampled_tok_s": sampled_tok_s and round(sampled_tok_s, 1),
                "ours_magpie_tok_s": magpie_tok_s and round(magpie_tok_s, 1),
                "speedup_vs_naive": round(ours_tok_s / naive_tok_s, 2),
                "fraction_of_ceiling": round(ours_tok_s / ceiling, 3),
                "outputs_equal_naive": f"{same}/{len(naive_texts)}",
                "prefect_overhead": round(share, 4),
                "prefect_overhead_s": round(overhead_s, 2),
                "peak_rss_mb": round(rss),
                "rss_growth_mb": growth and round(growth),
                "prompts": len(prompts),
                "max_new_tokens": args.max_new_tokens,
                "threads": DEFAULT_THREADS,
            }
        )
    )


if __name__ == "__main__":
    main()
