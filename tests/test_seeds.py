import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.data.seeds import DEFAULT_SEEDS, SeedError, load_seeds
from tests.hub_server import SHA, FakeHub


def write(tmp_path, name, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def test_default_seeds_are_shipped_and_varied():
    seeds = load_seeds()
    assert DEFAULT_SEEDS.is_file() and len(seeds) >= 5
    assert len({s["seed_id"] for s in seeds}) == len(seeds)


def test_text_file_passages_are_split_on_blank_lines(tmp_path):
    seeds = load_seeds(write(tmp_path, "s.txt", "First passage.\nStill first.\n\n\nSecond one.\n"))
    assert [s["context"] for s in seeds] == ["First passage.\nStill first.", "Second one."]


def test_seed_ids_are_stable_content_hashes_and_duplicates_collapse(tmp_path):
    a = load_seeds(write(tmp_path, "a.txt", "Alpha.\n\nBeta.\n\nAlpha."))
    b = load_seeds(write(tmp_path, "b.txt", "Gamma.\n\nBeta."))
    assert len(a) == 2
    assert a[1]["seed_id"] == b[1]["seed_id"]  # same text, same id: reruns reuse the cache


def test_jsonl_with_a_custom_column_and_ids(tmp_path):
    lines = [json.dumps({"id": "x1", "passage": "Some text."}), json.dumps({"passage": "More."})]
    seeds = load_seeds(write(tmp_path, "s.jsonl", "\n".join(lines)), column="passage")
    assert seeds[0] == {"seed_id": "x1", "context": "Some text."}


def test_csv_and_parquet_are_read_as_tables_with_the_chosen_column(tmp_path):
    csv_text = 'id,passage,topic\ntides,"Tides rise, twice a day.\nThen fall.",sea\nbees,Bees dance.,bees\n'
    from_csv = load_seeds(write(tmp_path, "s.csv", csv_text), column="passage")
    assert from_csv == [
        {"seed_id": "tides", "context": "Tides rise, twice a day.\nThen fall."},
        {"seed_id": "bees", "context": "Bees dance."},
    ]
    from_parquet = load_seeds(write(tmp_path, "s.parquet", parquet(PASSAGES)), column="passage")
    assert from_parquet == [
        {"seed_id": "tides", "context": "Tides rise twice a day."},
        {"seed_id": "bees", "context": "Bees dance."},
    ]
    with pytest.raises(SeedError, match=r"s2.csv, line 2: no 'context' column \(found \['passage'\]\)"):
        load_seeds(write(tmp_path, "s2.csv", "passage\nA.\n"))
    with pytest.raises(SeedError, match="line 2: more cells than the header"):
        load_seeds(write(tmp_path, "s3.csv", "context\nA, B\n"))
    with pytest.raises(SeedError, match="not a readable Parquet file"):
        load_seeds(write(tmp_path, "bad.parquet", "not parquet"))


def test_a_directory_must_be_a_saved_dataset(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("A passage.")
    with pytest.raises(SeedError, match="is a directory but not a saved dataset.*Pass one of: .txt"):
        load_seeds(str(tmp_path / "notes"))


def test_a_dataset_directory_this_tool_wrote_is_read_as_seeds(tmp_path):
    from tasks.data.dataset import save_dataset

    save_dataset.fn([{"id": "r1", "instruction": "Name a river."}], [], [], {"rows": 1}, tmp_path / "out")
    assert load_seeds(str(tmp_path / "out"), column="instruction") == [
        {"seed_id": "r1", "context": "Name a river."}
    ]


def test_local_dataset_directory(tmp_path):
    datasets.Dataset.from_list([{"context": "Saved passage."}]).save_to_disk(str(tmp_path / "ds"))
    assert load_seeds(str(tmp_path / "ds"))[0]["context"] == "Saved passage."


@pytest.mark.parametrize(
    "name, content, column, message",
    [
        (None, None, "context", "does not exist"),
        ("empty.txt", "", "context", "holds no seeds"),
        ("blank.jsonl", "\n\n", "context", "holds no seeds"),
        ("bad.jsonl", '{"context": "ok"}\n{"context": oops}\n', "context", "line 2: not valid JSON"),
        ("list.jsonl", '["a", "b"]\n', "context", "line 1: expected a JSON object"),
        (
            "col.jsonl",
            '{"text": "hello"}\n',
            "context",
            r"no 'context' column \(found \['text'\]\).*--seed-column",
        ),
        (
            "blank_ctx.jsonl",
            '{"context": "ok"}\n{"context": "  "}\n',
            "context",
            "line 2: the 'context' value is empty",
        ),
        ("latin1.txt", "caf\xe9 au lait".encode("latin-1"), "context", "not UTF-8"),
    ],
)
def test_bad_seed_input_names_the_problem_and_the_fix(tmp_path, name, content, column, message):
    source = write(tmp_path, name, content) if name else str(tmp_path / "missing.jsonl")
    with pytest.raises(SeedError, match=message):
        load_seeds(source, column=column)


# Seeds from a Hub dataset id, for real: `datasets.load_dataset` against a stand-in Hub on loopback
# (tests/hub_server.py). A subprocess, because `datasets` reads HF_ENDPOINT and HF_HOME at import.

ROOT = Path(__file__).resolve().parents[1]
LOAD = (
    "import json, sys; from tasks.data.seeds import load_seeds; print(json.dumps(load_seeds(*sys.argv[1:])))"
)
PASSAGES = {
    "id": ["tides", "bees"],
    "passage": ["Tides rise twice a day.", "Bees dance."],
    "topic": ["sea", "bees"],
}


def parquet(columns: dict[str, list]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


REPOS = {
    "card-and-parquet": {  # the layout `push_to_hub` writes
        "README.md": b"---\nlicense: mit\n---\n# Seed passages\n",
        "data/train-00000-of-00001.parquet": parquet(PASSAGES),
    },
    "bare-jsonl": {  # no dataset card: `datasets` asks the repo info API instead
        "train.jsonl": "".join(
            json.dumps({k: v[i] for k, v in PASSAGES.items()}) + "\n" for i in range(2)
        ).encode(),
    },
}


# Settings an offline user keeps in their shell; each test sets the ones it relies on.
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_env(endpoint: str, home: Path, **env: str) -> dict[str, str]:
    """The caller's environment, pointed at `endpoint`, online unless `env` says otherwise."""
    base = {k: v for k, v in os.environ.items() if k not in OFFLINE}
    return {**base, "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "PYTHONPATH": str(ROOT), **env}


def load_from_hub(endpoint: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LOAD, *args],
        cwd=ROOT,
        env=hub_env(endpoint, home, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("layout", REPOS)
def test_seeds_load_from_a_hub_dataset_id_with_the_chosen_column(tmp_path, layout):
    with FakeHub({"me/seeds": REPOS[layout]}) as hub:
        result = load_from_hub(hub.url, tmp_path / "hf", "me/seeds", "passage")
        assert result.returncode == 0, result.stderr
        seeds = json.loads(result.stdout)
        assert seeds == [
            {"seed_id": "tides", "context": "Tides rise twice a day."},
            {"seed_id": "bees", "context": "Bees dance."},
        ]
        data_file = next(path for path in REPOS[layout] if not path.endswith(".md"))
        assert any(r.startswith("GET ") and r.endswith(f"/resolve/{SHA}/{data_file}") for r in hub.requests)

        wrong = load_from_hub(hub.url, tmp_path / "hf", "me/seeds", "context")
        assert "me/seeds, record 0: no 'context' column (found ['id', 'passage', 'topic'])" in wrong.stderr
        assert "Pass --seed-column" in wrong.stderr

    # The Hub gone, the cached copy still loads offline.
    cached = load_from_hub(hub.url, tmp_path / "hf", "me/seeds", "passage", HF_HUB_OFFLINE="1")
    assert json.loads(cached.stdout) == seeds


def test_a_dataset_the_hub_does_not_have_names_the_problem_and_the_fix(tmp_path):
    with FakeHub({"me/other": REPOS["bare-jsonl"]}) as hub:
        result = load_from_hub(hub.url, tmp_path / "hf", "me/seeds")
    assert "SeedError: Seeds 'me/seeds': no such dataset on the Hugging Face Hub" in result.stderr
    assert "Check the dataset id (owner/name), or set HF_TOKEN" in result.stderr


def test_offline_mode_without_a_cached_copy_says_to_unset_it(tmp_path):
    result = load_from_hub("http://127.0.0.1:9", tmp_path / "hf", "me/seeds", HF_HUB_OFFLINE="1")
    assert "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" in result.stderr


def test_an_unreachable_hub_ends_the_cli_in_one_clear_line(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = subprocess.run(
        [sys.executable, "flows/instruct.py", "--backend", "fake", "--seeds", "me/seeds"],
        cwd=ROOT,
        env=hub_env(endpoint, tmp_path / "hf", PREFECT_HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: Cannot reach the Hugging Face Hub ({endpoint}) to load seeds 'me/seeds', and no copy is "
        "cached. Check your network connection (or HF_ENDPOINT and proxy settings), or pass a local "
        ".jsonl/.txt file or saved dataset directory instead."
    )


def test_the_hub_tests_do_not_depend_on_the_callers_offline_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what an offline user keeps in their shell
    test_seeds_load_from_a_hub_dataset_id_with_the_chosen_column(tmp_path, "bare-jsonl")
