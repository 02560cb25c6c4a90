"""The dataset directory is the previous dataset or the new one at every instant, even when the
save is killed mid-swap (issue 23, point 8), and a run never silently replaces a good dataset with
an empty or much smaller one (point 3)."""

import json
import subprocess
import sys
import textwrap

import datasets
import pytest

from flows.instruct import instruct
from tasks.backends import get_backend
from tasks.pipeline.cli import main
from tests.conftest import ROOT

# Saves "old" then "new" into argv[1], SIGKILLing itself right after the argv[2]-th rename-like
# call of the second save (argv[3] == "fallback": as where the filesystem has no atomic exchange).
SAVE_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tasks.data import dataset

    out, step, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    save = dataset.save_dataset.fn
    save([{"id": "old", "text": "old"}], [], [], {"rows": 1}, out)
    calls = 0

    def dying(fn):
        def wrapper(*args, **kwargs):
            global calls
            result = fn(*args, **kwargs)
            calls += 1
            if calls == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    os.rename, os.replace = dying(os.rename), dying(os.replace)
    if hasattr(dataset, "_exchange"):
        dataset._exchange = (lambda a, b: False) if mode == "fallback" else dying(dataset._exchange)
    save([{"id": "new", "text": "new"}], [], [], {"rows": 1}, out)
    print("finished")
    """
)


def saved_ids(path):
    return [row["id"] for row in datasets.load_from_disk(str(path / "dataset"))]


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
@pytest.mark.parametrize("step", [1, 2])
def test_a_save_killed_mid_swap_leaves_the_old_or_the_new_dataset(tmp_path, step, mode):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", SAVE_AND_DIE, str(out), str(step), mode],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == 0:  # the swap took fewer rename-like calls than `step`: nothing to test
        assert saved_ids(out) == ["new"] and "finished" in proc.stdout
        return
    assert proc.returncode == -9, proc.stderr
    # The next run starts by checking the output directory; then a save replaces what is there.
    from tasks.data.dataset import check_output_dir, save_dataset

    check_output_dir(out)
    assert saved_ids(out) in (["old"], ["new"])  # never missing, never half
    save_dataset.fn([{"id": "third", "text": "third"}], [], [], {"rows": 1}, out)
    assert saved_ids(out) == ["third"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no sibling left behind


@pytest.mark.usefixtures("prefect_server")
def test_an_empty_or_much_smaller_run_does_not_replace_a_good_dataset(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--backend", "fake", "--num-evolutions", "0", "--output-dir", str(out)]
    good = main(instruct, [*args, "--model", "fake"])
    assert good["rows"] > 0
    silent = get_backend("fake", "fake?name=silent")
    silent.responder = lambda prompt, params: ""  # a backend that returns only empty text
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(instruct, [*args, "--model", "fake?name=silent"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"error: the previous dataset in {out} has many more rows, so it was kept" in err
    assert json.loads((out / "summary.json").read_text())["rows"] == good["rows"]
    assert json.loads((tmp_path / "out.new" / "summary.json").read_text())["rows"] == 0

    # Nothing to replace: the empty dataset is written (its drops say why) and the command fails.
    with pytest.raises(SystemExit) as exit_info:
        main(instruct, [*args[:-1], str(tmp_path / "fresh"), "--model", "fake?name=silent"])
    assert exit_info.value.code == 1
    assert "error: this run produced no rows" in capsys.readouterr().err
    drops = (tmp_path / "fresh" / "drops.jsonl").read_text().splitlines()
    assert drops and all(json.loads(d)["reason"] == "empty" for d in drops)
