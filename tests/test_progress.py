"""Progress on the command line: a bar per long stage on a terminal (a run under a pseudo-terminal
ends with a clean screen: every log line whole, no bar left over), plain per-batch log lines
anywhere else, and no traceback or warning either way."""

import io
import itertools
import logging
import os
import pty
import re
import select
import subprocess
import threading
import time

import pytest
from rich.console import Console

from tasks.pipeline.progress import stage_progress
from tests.conftest import cli_command, cli_env

pytestmark = pytest.mark.usefixtures("prefect_server")

ARGS = ("--backend", "fake", "--num-instructions", "2", "--batch-size", "2")
CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def run_in_terminal(command: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """Run `command` with stdin, stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 0.5)[0]:
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # the other end closed: the process is gone
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")


def screen(output: str) -> list[str]:
    """What a terminal shows after `output`: text, carriage returns, newlines, and the controls
    rich's live display uses (erase line, cursor up; colours and cursor visibility ignored)."""
    lines, row, column = [""], 0, 0
    for part in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", output):
        if part == "\r":
            column = 0
        elif part == "\n":
            row += 1
            lines += [""] * (row + 1 - len(lines))
        elif control := CONTROL.fullmatch(part):
            if control[2] == "K":
                lines[row], column = "", 0
            elif control[2] == "A":
                row = max(0, row - int(control[1] or 1))
        elif part:
            line = lines[row].ljust(column)
            lines[row] = line[:column] + part + line[column + len(part) :]
            column += len(part)
    return lines


def test_a_terminal_shows_a_bar_per_stage_and_is_left_clean(tmp_path):
    env = cli_env(tmp_path / "results", TERM="xterm-256color", COLUMNS="120")
    code, output = run_in_terminal(cli_command(*ARGS, "--output-dir", str(tmp_path / "out")), env)
    shown = screen(output)
    text = "\n".join(shown)
    assert code == 0, text
    plain = CONTROL.sub("", output)
    for stage in ("self_instruct", "evol_instruct", "respond"):
        total = re.search(rf"{stage}: (\d+)/\1 rows done in", text)[1]  # the stage's closing line
        assert re.search(rf"{stage} ━+ +{total}/{total} rows", plain)  # its bar reached N/N rows
    assert "━" not in text  # every bar cleared when its stage ended
    finished = [line for line in shown if "Task run 'respond[" in line]
    assert len(finished) > 1 and all(
        re.fullmatch(r"[\d:.]+ \| INFO +\| Task run 'respond\[\d+\]' - Finished in state Completed\(\)", line)
        for line in finished
    )  # Prefect's log lines whole, each on its own line, none drawn through a bar
    for noise in ("Traceback", "Warning", "WARNING", "ERROR"):
        assert noise not in text


def test_anything_else_gets_a_log_line_per_batch_and_no_bar(tmp_path):
    env = cli_env(tmp_path / "results", TERM="xterm-256color")
    result = subprocess.run(
        cli_command(*ARGS, "--output-dir", str(tmp_path / "out")),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console
    # rows, not batches: a line per finished batch (2 rows), the time left, then the total
    assert re.search(r"respond: 2/(\d+) rows done, about \d+ s left\n", console)
    assert re.search(r"respond: (\d+)/\1 rows done in \d+ s\n", console)
    assert "━" not in console and "\x1b[" not in console
    assert "Traceback" not in console


def test_the_bar_counts_to_the_total_on_a_forced_terminal():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with stage_progress("respond", 3, console=console) as advance:
        for _ in range(3):
            advance(1)
    assert "respond" in out.getvalue() and "3/3 batches" in CONTROL.sub("", out.getvalue())


def test_log_lines_from_other_threads_never_leave_a_bar_behind(monkeypatch):
    """Task threads log while stages start and end within milliseconds: a line begun while the bar
    was live and written after it was cleared had drawn the bar again for good."""
    from prefect.logging.handlers import PrefectConsoleHandler

    out = io.StringIO()
    handler = PrefectConsoleHandler(stream=io.StringIO())
    handler.console = Console(file=out, force_terminal=True, width=120, color_system=None)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("instructforge.test-progress-race")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    monkeypatch.setattr("tasks.pipeline.progress.terminal_handler", lambda: handler)
    stop = threading.Event()

    def chatter(k: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            logger.info("task %d line %d", k, i)
            time.sleep(0.0005)

    threads = [threading.Thread(target=chatter, args=(k,)) for k in range(3)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(200):
            with stage_progress("respond", 4) as advance:
                for _ in range(4):
                    advance(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        logger.removeHandler(handler)
    assert [line for line in screen(out.getvalue()) if "━" in line] == []


def test_without_a_terminal_it_logs_every_step_and_the_end(caplog, monkeypatch):
    monkeypatch.setattr("tasks.pipeline.progress.terminal_handler", lambda: None)
    with caplog.at_level(logging.INFO, logger="instructforge"):
        with stage_progress("near_duplicates", 25, "rows", log_every=10) as advance:
            for _ in range(25):
                advance(1)
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(",")[0] for m in messages[:2]] == ["near_duplicates: 10/25 rows done"] + [
        "near_duplicates: 20/25 rows done"
    ]
    assert all(re.search(r", about \d+ s left$", m) for m in messages[:2])
    assert len(messages) == 3 and re.fullmatch(r"near_duplicates: 25/25 rows done in \d+ s", messages[2])


def test_a_stage_under_its_minimum_shows_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="instructforge"):
        with stage_progress("respond", 1) as advance:
            advance(1)
    assert caplog.records == []


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "line"),
    [
        (32, 128, 10.0, "respond: 32/128 rows done, about 30 s left"),
        (1, 4, 50.0, "respond: 1/4 rows done, about 2 min 30 s left"),
        (0, 4, 0.0, "respond: 0/4 rows done"),
        (4, 4, 81.4, "respond: 4/4 rows done in 1 min 21 s"),
    ],
)
def test_a_progress_line_gives_the_count_and_the_time_left(done, total, elapsed, line):
    from tasks.pipeline.artifacts import progress_line

    assert progress_line("respond", done, total, "rows", elapsed) == line


def stage_artifacts(state) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run]))
        )
    return {a.key: a for a in found if a.key and a.key.endswith("-progress") and a.type == "progress"}


@pytest.mark.parametrize("flow_name", ["instruct", "magpie", "self_instruct", "generate"])
def test_every_flow_shows_each_stage_in_rows_in_the_ui(tmp_path, fake, flow_name):
    import importlib

    flow = getattr(importlib.import_module(f"flows.{flow_name}"), flow_name)
    small = {
        "instruct": {"num_instructions": 2},
        "magpie": {"num_rows": 4},
        "self_instruct": {"num_instructions": 4},
    }
    state = flow(
        backend="fake",
        model="fake",
        output_dir=tmp_path / "out",
        **small.get(flow_name, {}),
        return_state=True,
    )
    assert state.is_completed(), state.message
    stages = {
        k: a for k, a in stage_artifacts(state).items() if k != f"{flow_name.replace('_', '-')}-progress"
    }
    assert stages, flow_name
    for key, artifact in stages.items():
        assert artifact.data == 100.0, key
        assert re.fullmatch(r"\w+: (\d+)/\1 rows done in [\w ]+", artifact.description), artifact.description
