"""The bad-input catalogue: each mistake ends the command with exit code 2 and one line that names
the problem and the fix, before any model call and before any Prefect run starts."""

import json
import os
from pathlib import Path

import datasets
import pytest

from flows.instruct import check_inputs, instruct
from tasks.pipeline.cli import main


def seeds_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def dataset_dir(tmp_path):
    datasets.Dataset.from_list([{"text": "an older run's column"}]).save_to_disk(str(tmp_path / "old"))
    return str(tmp_path / "old")


def foreign_dir(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    return str(tmp_path / "mine")


def not_a_dataset(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("A passage.")
    return str(tmp_path / "notes")


def remote_code_model(tmp_path):
    (tmp_path / "rc").mkdir()
    config = {"model_type": "mine", "auto_map": {"AutoConfig": "configuration_mine.MineConfig"}}
    (tmp_path / "rc" / "config.json").write_text(json.dumps(config))
    return str(tmp_path / "rc")


CASES = {
    "missing seed file": (
        lambda t: ["--seeds", str(t / "nope.jsonl")],
        "does not exist. Pass an existing file",
    ),
    "empty seed file": (lambda t: ["--seeds", seeds_file(t, "e.txt", "")], "holds no seeds"),
    "malformed JSONL line": (
        lambda t: ["--seeds", seeds_file(t, "m.jsonl", '{"context": "a"}\n{"context": \n')],
        "line 2: not valid JSON",
    ),
    "JSONL line not an object": (
        lambda t: ["--seeds", seeds_file(t, "l.jsonl", "[1, 2]\n")],
        "line 1: expected a JSON object",
    ),
    "wrong column": (
        lambda t: ["--seeds", seeds_file(t, "c.jsonl", '{"text": "a"}\n')],
        "Pass --seed-column",
    ),
    "non-UTF-8 bytes": (lambda t: ["--seeds", seeds_file(t, "b.txt", b"caf\xe9\n")], "not UTF-8 text"),
    "empty context": (
        lambda t: ["--seeds", seeds_file(t, "x.jsonl", '{"context": "a"}\n{"context": ""}\n')],
        "line 2: the 'context' value is empty",
    ),
    "dataset directory with other columns": (lambda t: ["--seeds", dataset_dir(t)], "no 'context' column"),
    "unknown Hub model offline": (
        lambda t: ["--backend", "transformers", "--model", "no-such-org/no-such-model"],
        "the Hub cannot be reached",
    ),
    "missing local model directory": (
        lambda t: ["--backend", "transformers", "--model", str(t / "my-model")],
        "is not a local directory",
    ),
    "model with remote code": (
        lambda t: ["--backend", "transformers", "--model", remote_code_model(t)],
        "INSTRUCTFORGE_TRUST_REMOTE_CODE=1",
    ),
    "seeds directory that is not a dataset": (
        lambda t: ["--seeds", not_a_dataset(t)],
        "is a directory but not a saved dataset",
    ),
    "spreadsheet seed file": (
        lambda t: ["--seeds", seeds_file(t, "s.xlsx", b"PK\x03")],
        ".xlsx files cannot",
    ),
    "CSV without the column": (
        lambda t: ["--seeds", seeds_file(t, "s.csv", "text\nA passage.\n")],
        "s.csv, line 2: no 'context' column (found ['text']). Pass --seed-column",
    ),
    "zero instructions": (
        lambda t: ["--num-instructions", "0"],
        "error: argument --num-instructions: must be greater than 0, got 0.",
    ),
    "negative evolutions": (
        lambda t: ["--num-evolutions", "-2"],
        "error: argument --num-evolutions: must be at least 0, got -2.",
    ),
    "zero batch size": (
        lambda t: ["--batch-size", "0"],
        "error: argument --batch-size: must be greater than 0, got 0.",
    ),
    "zero max new tokens": (
        lambda t: ["--max-new-tokens", "0"],
        "error: argument --max-new-tokens: must be greater than 0, got 0.",
    ),
    "negative temperature": (
        lambda t: ["--temperature", "-1"],
        "error: argument --temperature: must be at least 0, got -1.",
    ),
    "threshold above 1": (
        lambda t: ["--near-duplicate-threshold", "2"],
        "error: argument --near-duplicate-threshold: must be greater than 0 and at most 1, got 2.",
    ),
    "unknown mutation": (lambda t: ["--mutations", "deepening", "shuffle"], "invalid choice: 'shuffle'"),
    "unknown backend": (lambda t: ["--backend", "vllm-magic"], "invalid choice: 'vllm-magic'"),
    "not a number": (lambda t: ["--num-instructions", "five"], "invalid int value: 'five'"),
    "output dir is a file": (
        lambda t: ["--output-dir", seeds_file(t, "f.txt", "x")],
        "is a file. Pass a directory",
    ),
    "output dir holds other files": (lambda t: ["--output-dir", foreign_dir(t)], "did not write"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_clear_line(case, tmp_path, capsys, fake):
    make_args, message = CASES[case]
    args = make_args(tmp_path)
    if "--backend" not in args:
        args = ["--backend", "fake", *args]
    if "--output-dir" not in args:
        args += ["--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(instruct, args, preflight=check_inputs)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert fake.calls == []
    assert not (tmp_path / "out").exists()


def test_an_unreadable_seed_file_is_one_clear_line(tmp_path, capsys, fake, monkeypatch):
    path = seeds_file(tmp_path, "secret.txt", "A passage.")
    Path(path).chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make it fail as it does for a user
        real = Path.read_text

        def read_text(self, *args, **kwargs):
            if str(self) == path:
                raise PermissionError(13, "Permission denied", path)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", read_text)
    args = ["--backend", "fake", "--seeds", path, "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(instruct, args, preflight=check_inputs)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip() == (
        f"error: Cannot read {path}: permission denied. Make it readable (chmod u+r) or pass a readable copy."
    )
    assert fake.calls == []


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 15


def test_foreign_files_are_never_touched(tmp_path, capsys):
    path = foreign_dir(tmp_path)
    with pytest.raises(SystemExit):
        main(instruct, ["--backend", "fake", "--output-dir", path], preflight=check_inputs)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.usefixtures("prefect_server")  # the Secret-block lookup talks to the Prefect API
def test_push_without_a_token_fails_before_any_model_call(tmp_path, capsys, monkeypatch, fake):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = ["--backend", "fake", "--push-to-hub", "me/data", "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main(instruct, args, preflight=check_inputs)
    assert "set HF_TOKEN" in capsys.readouterr().err and fake.calls == []
