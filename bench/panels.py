"""The fp32 engine with its weights' bf16 values held in bf16 panels, against fp32 panels.

    python bench/panels.py --models SmolLM2-360M SmolLM2-1.7B --prompts 128 --max-new-tokens 256

A checkpoint published in bf16, loaded in fp32 (as the engine loads it), has weights whose values
are all bf16 values; linear.c then holds its panels in bf16 and widens them back exactly
(tasks/backends/engine/matmul.py). For each model (random weights of its published shapes, stored
in bf16: bench/random_models.py), whole greedy runs of the bench's prompts on a fresh fp32 backend,
`INSTRUCTFORGE_MATMUL=fp32-panels` and not, alternated (ABBA..., --rounds), each in a process of
its own (in one process, the side that ran after the other's freed backend got fewer slots, or at
1.7B ran out of memory: the engine keeps freed memory for reuse). Prints each side's mean tokens/s,
the bytes its panels hold, the rows a decode step ran, and whether the outputs are equal (they must
be: the same fp32 arithmetic on the same values).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prompt_set import bench_prompts  # noqa: E402
from random_models import CONFIGS, random_model  # noqa: E402
from sizes import engine_tokens  # noqa: E402

from tasks.backends import GenerationParams  # noqa: E402
from tasks.backends.transformers_backend import TransformersBackend  # noqa: E402

WAYS = {"fp32 panels": "fp32-panels", "bf16 panels": ""}  # INSTRUCTFORGE_MATMUL for each


def one_run(name: str, prompts: int, new_tokens: int) -> dict:
    """One greedy run in this process, with the panels `INSTRUCTFORGE_MATMUL` asks for."""
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0)
    backend = TransformersBackend(str(random_model(name)))
    linear = backend.engine.net.linear
    ids = [
        backend.tokenizer(backend.render(p), add_special_tokens=False)["input_ids"]
        for p in bench_prompts(prompts)
    ]
    engine_tokens(backend, ids[:2], params.model_copy(update={"max_new_tokens": 4}))  # warm up
    tok_s, outputs = engine_tokens(backend, ids, params)
    return {
        "bf16_panels": linear.panels_bf16,
        "tok_s": tok_s,
        "panels_mb": sum(p.numel() * p.element_size() for p in linear.packed.values()) / 1e6,
        "rows": engine_tokens.last["row_steps"] / engine_tokens.last["steps"],
        "outputs": hashlib.sha256(json.dumps(outputs).encode()).hexdigest(),
    }


def compare(name: str, prompts: int, new_tokens: int, rounds: int) -> str:
    runs = {way: [] for way in WAYS}
    for r in range(rounds):
        for way in list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]:
            command = [sys.executable, __file__, "--one", "--models", name, "--prompts", str(prompts)]
            command += ["--max-new-tokens", str(new_tokens)]
            env = os.environ | {"INSTRUCTFORGE_MATMUL": WAYS[way]}
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name}, {way}: the run failed\n{done.stderr[-2000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            if run["bf16_panels"] != (way == "bf16 panels"):
                sys.exit(f"{name}: {way} not taken (no C kernel here, or weights that are not bf16 values)")
            runs[way].append(run)
            print(f"  {way}: {run['tok_s']:.1f} tok/s, {run['rows']:.0f} rows a step", flush=True)
    a, b = (sum(run["tok_s"] for run in runs[way]) / rounds for way in WAYS)
    same = len({run["outputs"] for way in WAYS for run in runs[way]}) == 1
    fp32, bf16 = (runs[way][0] for way in WAYS)
    return (
        f"{name}, {prompts} prompts x {new_tokens} tokens: fp32 panels {a:.1f} tok/s, bf16 panels {b:.1f} "
        f"({b / a:.3f}x); panels {fp32['panels_mb']:,.0f} and {bf16['panels_mb']:,.0f} MB; "
        f"greedy outputs {'equal' if same else 'DIFFERENT'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["SmolLM2-360M"], choices=list(CONFIGS))
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args()
    for name in args.models:
        if args.one:
            print(json.dumps(one_run(name, args.prompts, args.max_new_tokens)), flush=True)
        else:
            print(compare(name, args.prompts, args.max_new_tokens, args.rounds), flush=True)


if __name__ == "__main__":
    main()
