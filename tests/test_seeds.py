import json

import datasets
import pytest

from tasks.seeds import DEFAULT_SEEDS, SeedError, load_seeds


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
