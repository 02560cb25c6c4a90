"""`python -m tasks.compare A B`: two runs' reports side by side, with the change B - A."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.instruct import instruct
from tasks.compare import compare_markdown, main

ROOT = Path(__file__).resolve().parents[1]


def run_dir(tmp_path, name, summary, rows):
    path = tmp_path / name
    path.mkdir()
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def summary(rows, drops, words, rouge, overrides=None):
    return {
        "rows": rows,
        "rows_per_stage": {"seeds": 6, "self_instruct": 30, "respond": rows, "final": rows},
        "drops": drops,
        "failures": 0,
        "quality": {
            "response_words": {"median": words},
            "distinct_2": {"response": 0.5},
            "mean_pairwise_rouge_l": rouge,
        },
        "prompt_overrides": overrides or {},
        "output_dir": "/somewhere/else",
    }


def table_rows(markdown):
    """{metric: [A, B, change]} of every table row."""
    cells = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    return {c[0].strip(): [x.strip() for x in c[1:]] for c in cells if c[0].strip() != "metric"}


def test_two_runs_side_by_side(tmp_path):
    a = run_dir(
        tmp_path,
        "a",
        summary(20, {"respond:degenerate": 4, "self_instruct:over_cap": 6}, 80, 0.412),
        [{"response_truncated": True}] * 15 + [{"response_truncated": False}] * 5,
    )
    override = {"respond.jinja": {"sha256": "8bfa8a152943" + "0" * 52, "text": "Briefly: {{ instruction }}"}}
    b = run_dir(
        tmp_path,
        "b",
        summary(25, {"self_instruct:over_cap": 5}, 41.5, 0.398, override),
        [{"response_truncated": True}] * 5 + [{"response_truncated": False}] * 20,
    )
    table = table_rows(compare_markdown(a, b))
    assert table["rows"] == ["20", "25", "+5"]
    assert table["rows_per_stage.respond"] == ["20", "25", "+5"]
    assert table["respond:degenerate"] == ["4", "0", "-4"]  # a reason B never hit counts 0
    assert table["self_instruct:over_cap"] == ["6", "5", "-1"]
    assert table["response_words.median"] == ["80", "41.5", "-38.5"]
    assert table["mean_pairwise_rouge_l"] == ["0.412", "0.398", "-0.014"]
    assert table["distinct_2.response"] == ["0.5", "0.5", "0"]
    assert table["response"] == ["0.75", "0.2", "-0.55"]  # share of rows that hit the token limit
    assert table["respond.jinja"] == ["-", "8bfa8a152943", "changed"]
    assert "output_dir" not in table and "/somewhere/else" not in compare_markdown(a, b)


def test_the_command_prints_and_writes_the_table(tmp_path, capsys):
    a = run_dir(tmp_path, "a", summary(1, {}, 3, 0.0), [{"response_truncated": False}])
    b = run_dir(tmp_path, "b", summary(2, {}, 5, 0.0), [{"response_truncated": False}] * 2)
    main([str(a), str(b), "--output", str(tmp_path / "compare.md")])
    printed = capsys.readouterr().out
    assert "| rows | 1 | 2 | +1 |" in printed
    assert (tmp_path / "compare.md").read_text() == printed


def test_a_directory_that_is_no_run_is_one_clear_line(tmp_path, capsys):
    a = run_dir(tmp_path, "a", summary(1, {}, 3, 0.0), [])
    with pytest.raises(SystemExit) as exit_info:
        main([str(a), str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no summary.json" in err and err.count("\n") == 1
    (tmp_path / "versions").mkdir()
    for version in ("2026-01-01T000000Z", "2026-02-01T000000Z"):
        run_dir(tmp_path / "versions", version, summary(1, {}, 3, 0.0), [])
    with pytest.raises(SystemExit):
        main([str(a), str(tmp_path / "versions")])
    assert (
        "pass one of them, e.g. " + str(tmp_path / "versions" / "2026-02-01T000000Z")
        in capsys.readouterr().err
    )


@pytest.mark.usefixtures("prefect_server")
def test_compare_a_run_with_its_prompt_override(tmp_path, fake):
    small = {"backend": "fake", "model": "fake", "num_instructions": 3, "num_evolutions": 1}
    first = instruct(**small, output_dir=tmp_path / "before")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "respond.jinja").write_text("Answer in one short paragraph.\n\n{{ instruction }}")
    second = instruct(**small, prompts=tmp_path / "p", output_dir=tmp_path / "after")
    result = subprocess.run(
        [sys.executable, "-m", "tasks.compare", str(tmp_path / "before"), str(tmp_path / "after")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    table = table_rows(result.stdout)
    a, b = first["quality"]["words"]["response"]["mean"], second["quality"]["words"]["response"]["mean"]
    assert table["words.response.mean"][:2] == [f"{a:g}", f"{b:g}"]
    assert table["rows"][:2] == [str(first["rows"]), str(second["rows"])]
    assert table["respond.jinja"][0] == "-" and table["respond.jinja"][2] == "changed"
    assert table["prompts"] == ["-", "p", "changed"]  # the parameters that differ, without local paths
    assert "num_instructions" not in table and "| temperature |" not in result.stdout
