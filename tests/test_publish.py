"""What a run publishes: the dataset card, a Hub-loadable layout, dated versions for scheduled
refreshes that add only what is new, Prefect artifacts, and a Hub push (checked by exactly what it
would upload: no network here)."""

import json

import datasets
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import ArtifactSort

from flows.instruct import instruct
from tasks.backends.fake import prompt_text
from tasks.data.hub import upload_plan
from tests.hub_server import FakeHub

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
    versions = sorted(p.name for p in (tmp_path / "versions").iterdir() if p.name != "latest")
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
    with get_client(sync_client=True) as client:  # the worker's server also holds earlier tests' runs
        newest_first = client.read_artifacts(sort=ArtifactSort.CREATED_DESC)
    keys = {}
    for artifact in newest_first:
        keys.setdefault(artifact.key, artifact)  # this run's: the newest of each key
    assert {"instruct-progress", "instruct-sample", "instruct-report"} <= set(keys)
    assert keys["instruct-progress"].data == 100.0
    assert "rows" in keys["instruct-report"].data


@pytest.fixture
def hub(monkeypatch):
    """A stand-in Hub on loopback where token `hf_write` is user `me`, member of org `team`."""
    tokens = {"hf_write": {"name": "me", "orgs": ["team"]}, "hf_read": {"name": "me", "role": "read"}}
    with FakeHub({"team/existing": {}}, tokens) as stand_in:
        # huggingface_hub reads HF_ENDPOINT at import; HfApi reads this at construction.
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", stand_in.url)
        monkeypatch.setenv("HF_TOKEN", "hf_write")
        yield stand_in


def test_push_to_hub_uploads_the_card_and_parquet_privately(tmp_path, hub, fake):
    summary = instruct(**SMALL, output_dir=tmp_path / "out", push_to_hub="me/data")
    plan = upload_plan(tmp_path / "out")
    assert plan == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "drops.jsonl",
        "evol_depth.png",
        "lengths.png",
        "recipe.json",
        "summary.json",
    ]
    assert sorted(hub.repos["me/data"]) == plan and "me/data" in hub.private
    for name in plan:
        assert hub.repos["me/data"][name] == (tmp_path / "out" / name).read_bytes(), name
    assert summary["hub_url"] == f"{hub.url}/datasets/me/data"
    assert b"hf_write" not in hub.repos["me/data"]["README.md"]


@pytest.mark.parametrize(
    ("token", "repo", "message"),
    [
        ("hf_bad", "me/data", "rejected the token"),
        ("hf_read", "me/data", "'me' is read-only"),
        ("hf_write", "someone-else/data", "cannot create the dataset 'someone-else/data'"),
    ],
)
def test_a_push_that_cannot_succeed_fails_before_any_model_call(
    tmp_path, monkeypatch, hub, fake, token, repo, message
):
    monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(ValueError, match=message):
        instruct(**SMALL, output_dir=tmp_path / "out", push_to_hub=repo)
    assert not fake.calls and not (tmp_path / "out").exists()
    assert "POST /api/repos/create" not in hub.requests


def test_an_unreachable_hub_is_one_clear_error(monkeypatch):
    from tasks.data.hub import check_hub

    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_write")
    with pytest.raises(ValueError, match="Cannot reach the Hub at http://127.0.0.1:9"):
        check_hub("me/data")


def test_a_push_into_an_existing_repo_of_an_org_passes_the_check(hub):
    from tasks.data.hub import check_hub

    check_hub("team/existing")
    check_hub("team/new")
    assert "POST /api/repos/create" not in hub.requests  # a dry check: nothing created


def test_a_push_the_hub_refuses_is_not_retried_and_fails_the_run_with_its_summary(tmp_path, hub, fake):
    hub.refuse = (403, "Storage quota exceeded")  # the check passes; the Hub refuses the write
    state = instruct(**SMALL, output_dir=tmp_path / "out", push_to_hub="team/data", return_state=True)
    assert state.is_failed()
    summary = state.result(raise_on_failure=False)
    assert "the Hub refused the push to 'team/data'" in summary["hub_error"] and "403" in summary["hub_error"]
    assert (tmp_path / "out" / "README.md").exists() and summary["rows"] > 0
    assert hub.requests.count("POST /api/repos/create") == 1  # a 4xx is not retried


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
    from tasks.data.hub import hub_token

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="set HF_TOKEN, or save a Prefect Secret block named 'hf-token'"):
        hub_token()


CLI = ["--backend", "fake", "--model", "fake", "--num-instructions", "2", "--output-dir", "rel/out"]


def test_a_run_ends_by_printing_where_the_data_went(tmp_path, monkeypatch, capsys, hub, fake):
    from flows.instruct import check_inputs
    from tasks.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    main(instruct, [*CLI, "--push-to-hub", "me/data"], check_inputs)
    last = capsys.readouterr().out.strip().splitlines()[-2:]
    assert last == [f"Dataset: {tmp_path / 'rel' / 'out'}", f"On the Hub: {hub.url}/datasets/me/data"]


def test_a_bad_push_target_ends_the_command_with_one_line(tmp_path, monkeypatch, capsys, hub, fake):
    from flows.instruct import check_inputs
    from tasks.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(instruct, [*CLI, "--push-to-hub", "someone-else/data"], check_inputs)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: The Hub token of 'me'")
    assert not fake.calls


def test_a_refused_push_ends_the_command_with_its_summary_and_one_line(
    tmp_path, monkeypatch, capsys, hub, fake
):
    from flows.instruct import check_inputs
    from tasks.pipeline import cli

    hub.refuse = (403, "Storage quota exceeded")  # the check passes; the Hub refuses the write
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(instruct, [*CLI, "--push-to-hub", "team/data"], check_inputs)
    out, err = capsys.readouterr()
    assert exit_.value.code == 1 and "Dataset: " in out and "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("error: the Hub refused the push to 'team/data'")
