"""What a run publishes: the dataset card, a Hub-loadable layout, dated versions for scheduled
refreshes that add only what is new, Prefect artifacts, and a Hub push (checked by exactly what it
would upload: no network here)."""

import json

import datasets
import pytest
import yaml
from prefect.client.orchestration import get_client

from flows.instruct import instruct
from tasks.backends.fake import prompt_text
from tasks.hub import upload_plan

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = {"backend": "fake", "model": "fake", "num_instructions": 2, "num_evolutions": 1}


def test_every_dataset_directory_has_a_card_and_loads_with_load_dataset(tmp_path, fake):
    summary = instruct(**SMALL, output_dir=tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert "text-generation" in front["task_categories"] and "synthetic" in front["tags"]
    for expected in (
        '"num_instructions": 2',
        "`fake`",
        "self_instruct.jinja",
        "arXiv:2212.10560",
        "arXiv:2304.12244",
        f"{summary['rows']} rows",
    ):
        assert expected in card
    assert "arXiv:2406.08464" not in card  # Magpie did not make these rows
    loaded = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert len(loaded) == summary["rows"]


def test_versioned_runs_keep_every_version(tmp_path, fake):
    first = instruct(**SMALL, output_dir=tmp_path / "versions", versioned=True)
    second = instruct(**SMALL, output_dir=tmp_path / "versions", versioned=True)
    versions = sorted(p.name for p in (tmp_path / "versions").iterdir())
    assert len(versions) == 2 and first["output_dir"] != second["output_dir"]
    assert all((tmp_path / "versions" / v / "summary.json").exists() for v in versions)


def test_a_refresh_with_new_seeds_computes_only_their_rows(tmp_path, fake):
    seeds = [json.loads(line) for line in open("data/seed_contexts.jsonl")]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    instruct(**SMALL, seeds=str(path), batch_size=2, output_dir=tmp_path / "v", versioned=True)
    fake.calls.clear()
    new = {"id": "volcanoes", "context": "Volcanoes form where molten rock reaches the surface."}
    path.write_text("".join(json.dumps(s) + "\n" for s in [*seeds, new]))
    instruct(**SMALL, seeds=str(path), batch_size=2, output_dir=tmp_path / "v", versioned=True)
    self_instruct = {prompt_text(p) for p in fake.prompts if "Questions:" in prompt_text(p)}
    assert len(self_instruct) == 1 and "molten rock" in self_instruct.pop()
    # later stages: the new seed's rows plus at most one partial batch per stage
    assert len(fake.prompts) <= 1 * 3 + 2 * 2 + 2 * 2 + 2 * 2


def test_a_run_shows_progress_samples_and_report_in_the_ui(tmp_path, fake):
    instruct(**SMALL, output_dir=tmp_path / "out")
    with get_client(sync_client=True) as client:
        keys = {a.key: a for a in client.read_artifacts()}
    assert {"instruct-progress", "instruct-sample", "instruct-report"} <= set(keys)
    assert keys["instruct-progress"].data == 100.0
    assert "rows" in keys["instruct-report"].data


def test_push_to_hub_uploads_the_card_and_parquet_privately_with_the_env_token(tmp_path, monkeypatch, fake):
    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "https://huggingface.co/datasets/me/data/commit/abc"

    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken")
    summary = instruct(**SMALL, output_dir=tmp_path / "out", push_to_hub="me/data")
    assert calls[0] == ("token", "hf_testtoken")
    assert calls[1] == ("create_repo", "me/data", {"repo_type": "dataset", "private": True, "exist_ok": True})
    upload = calls[2][1]
    assert upload["repo_id"] == "me/data" and upload["folder_path"] == summary["output_dir"]
    plan = upload_plan(tmp_path / "out")
    assert plan == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "drops.jsonl",
        "evol_depth.png",
        "lengths.png",
        "summary.json",
    ]
    assert set(upload["allow_patterns"]) >= {"README.md", "data/*.parquet", "*.png"}
    assert "hf_testtoken" not in (tmp_path / "out" / "README.md").read_text()
    from tasks.hub import dataset_url

    assert summary["hub_url"] == dataset_url("me/data")


def test_nothing_pushed_holds_a_local_path(tmp_path, monkeypatch, fake):
    seeds = tmp_path / "mine" / "seeds.jsonl"
    seeds.parent.mkdir()
    seeds.write_text(json.dumps({"context": "Tides rise twice a day as the Moon pulls the oceans."}) + "\n")
    out = tmp_path / "out"
    instruct(**SMALL, seeds=str(seeds), output_dir=out)
    for name in upload_plan(out):
        assert str(tmp_path).encode() not in (out / name).read_bytes(), name
    assert '"seeds": "seeds.jsonl"' in (out / "README.md").read_text()


def test_push_without_a_token_says_how_to_provide_one(monkeypatch):
    from tasks.hub import hub_token

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="set HF_TOKEN, or save a Prefect Secret block named 'hf-token'"):
        hub_token()


def test_a_run_ends_by_printing_where_the_data_went(tmp_path, monkeypatch, capsys, fake):
    from flows.instruct import check_inputs
    from tasks.cli import main
    from tasks.hub import dataset_url

    class Api:
        def __init__(self, token=None): ...

        def create_repo(self, repo_id, **kwargs): ...

        def upload_folder(self, **kwargs):
            return "https://huggingface.co/datasets/me/data/commit/abc"

    monkeypatch.setattr("huggingface_hub.HfApi", Api)
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken")
    monkeypatch.chdir(tmp_path)
    argv = ["--backend", "fake", "--model", "fake", "--num-instructions", "2", "--output-dir", "rel/out"]
    main(instruct, [*argv, "--push-to-hub", "me/data"], check_inputs)
    last = capsys.readouterr().out.strip().splitlines()[-2:]
    assert last == [f"Dataset: {tmp_path / 'rel' / 'out'}", f"On the Hub: {dataset_url('me/data')}"]
