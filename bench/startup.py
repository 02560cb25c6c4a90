"""Time from `python flows/instruct.py` to its first line of progress, without and with a Prefect
server already running (`prefect server start`), measured side by side in one run.

    python bench/startup.py              # 3 runs each way, about 2 minutes
    python bench/startup.py --runs 1     # a quick look
    python bench/startup.py --timeline   # `make run`'s wall time, stage by stage (the embedded model)

Each run is `flows/instruct.py --backend fake --num-instructions 1` in a new process (the fake
backend, so no model load is timed), into a fresh output directory, with every run's results in one
temporary result store. The first line of progress is the flow run's first log line ("Beginning
flow run"). Without a server Prefect starts its temporary one; then this script starts
`prefect server start` on 127.0.0.1:4200 (its start timed apart: paid once, not per run), runs the
same command, which finds and uses it, and stops the server. It also checks that runs on the
running server hit the cache the temporary server's runs filled (results are local files), and that
their console holds no traceback, warning or error. The last line is one JSON object.

`--timeline` instead runs what `make run` runs (`flows/instruct.py`, default flags, the embedded
model) once, with a fresh result store (nothing from cache), and prints when each milestone line
appeared and the seconds since the one before: the plan (imports, seeds, model load, calibration),
the server's start, each stage, the save, the exit; then the model's load alone, timed in a new
process.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.pipeline.server import DEFAULT_API_URL, REUSE_ENV, probe  # noqa: E402

FIRST_PROGRESS = "Beginning flow run"
NOISE = re.compile(r"Traceback|Warning|WARNING|ERROR|Error")


def run_flow(env: dict, out: Path) -> dict:
    """One run of the instruct flow: seconds to its first output line, to its first line of progress
    and to its end, its console, and its batches served from cache."""
    command = [
        sys.executable,
        str(ROOT / "flows" / "instruct.py"),
        "--backend",
        "fake",
        "--num-instructions",
        "1",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*command, "--output-dir", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = progress = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        first = first or time.perf_counter() - start
        if progress is None and FIRST_PROGRESS in line:
            progress = time.perf_counter() - start
    if proc.wait() != 0 or progress is None:
        raise RuntimeError("the flow failed:\n" + "".join(lines))
    usage = json.loads((out / "summary.json").read_text())["usage"]
    return {
        "first_line_s": round(first, 2),
        "progress_s": round(progress, 2),
        "total_s": round(time.perf_counter() - start, 2),
        "reused": any("Using the Prefect server" in line for line in lines),
        "noise": [line.rstrip() for line in lines if NOISE.search(line)],
        "cached": sum(e["cached_batches"] for e in usage.values()),
        "batches": sum(e["batches"] for e in usage.values()),
    }


MILESTONES = re.compile(
    r"Plan for|Starting temporary server|Using the Prefect server|Beginning flow run|Loaded \d+ seed|"
    r"SelfInstruct \(round|EvolInstruct round|respond: \d+/\d+ rows done|Saving \d+ rows|Finished in state"
)


def timeline(env: dict, out: Path, flags: list[str]) -> None:
    """`make run`'s milestones, each with its time and the seconds since the one before."""
    command = [sys.executable, str(ROOT / "flows" / "instruct.py"), *flags, "--output-dir", str(out)]
    start = last = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        now = time.perf_counter()
        if MILESTONES.search(line):
            text = line.split(" - ", 1)[-1].strip()[:90]
            print(f"{now - start:7.1f} s  (+{now - last:6.1f})  {text}", flush=True)
            last = now
    code = proc.wait()
    print(f"{time.perf_counter() - start:7.1f} s  (+{time.perf_counter() - last:6.1f})  exit {code}")
    load = (
        "import time, tasks; from tasks.backends import get_backend; from tasks.backends.embedded import "
        "EMBEDDED_MODEL as M; t = time.perf_counter(); get_backend('transformers', M); "
        "print(round(time.perf_counter() - t, 1))"
    )
    seconds = subprocess.run([sys.executable, "-c", load], cwd=ROOT, env=env, capture_output=True, text=True)
    print(f"the model's load alone: {seconds.stdout.strip() or seconds.stderr[-300:]} s")


def start_server(env: dict) -> tuple[subprocess.Popen, float]:
    start = time.perf_counter()
    prefect = [str(Path(sys.executable).with_name("prefect"))]  # the CLI of this environment
    server = subprocess.Popen(
        [*prefect, "server", "start", "--host", "127.0.0.1", "--port", "4200"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not probe(DEFAULT_API_URL)[0]:
        if server.poll() is not None or time.perf_counter() - start > 300:
            raise RuntimeError("`prefect server start` did not come up on 127.0.0.1:4200")
        time.sleep(0.2)
    return server, time.perf_counter() - start


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs each way")
    parser.add_argument("--timeline", action="store_true", help="time `make run` stage by stage instead")
    parser.add_argument("flags", nargs="*", help="with --timeline: flags for flows/instruct.py (after --)")
    args = parser.parse_args()
    if probe(DEFAULT_API_URL)[0]:
        raise SystemExit(
            "A Prefect server already runs at 127.0.0.1:4200: stop it first (this bench starts its own)."
        )
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", REUSE_ENV)}
        env.update(PREFECT_LOCAL_STORAGE_PATH=str(Path(tmp) / "results"), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if args.timeline:
            timeline(env, Path(tmp) / "out", args.flags)
            return
        without = [run_flow(env, Path(tmp) / f"without{i}") for i in range(args.runs)]
        server, server_start = start_server(env)
        try:
            running = [run_flow(env, Path(tmp) / f"with{i}") for i in range(args.runs)]
        finally:
            stop_server(server)
    assert not any(r["reused"] for r in without) and all(r["reused"] for r in running)
    a, b = median(without, "progress_s"), median(running, "progress_s")
    each = f"median of {args.runs}; whole run"
    print(f"first line of progress, temporary server: {a:5.2f} s ({each} {median(without, 'total_s')} s)")
    print(f"first line of progress, server running:   {b:5.2f} s ({each} {median(running, 'total_s')} s)")
    print(
        f"  {a / b:.1f}x sooner; `prefect server start` itself took {server_start:.1f} s (once, not per run)"
    )
    cached, batches = sum(r["cached"] for r in running), sum(r["batches"] for r in running)
    print(f"runs on the running server: {cached}/{batches} batches from the cache the earlier runs filled")
    noise = [line for r in running + without for line in r["noise"]]
    print(
        f"console noise (tracebacks, warnings, errors): {len(noise)} lines"
        + "".join(f"\n  {n}" for n in noise[:5])
    )
    print(
        json.dumps(
            {
                "runs": args.runs,
                "temporary_server": without,
                "server_running": running,
                "server_start_s": round(server_start, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
