"""Token accounting on every backend: each stage's prompt and completion tokens and speed, in
summary.json, the report and the Prefect progress artifact, also when the batches come from cache."""

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.instruct import instruct
from flows.magpie import magpie
from tasks.backends.fake import prompt_text
from tasks.pipeline import usage
from tests.openai_stand_in import StandIn
from tests.test_chat_template_discovery import LLAMA3_PROPS

pytestmark = pytest.mark.usefixtures("prefect_server")


def words(prompts) -> int:
    return sum(len(prompt_text(p).split()) for p in prompts)


def test_magpie_counts_each_stage_and_reports_cached_batches(tmp_path, fake):
    out = tmp_path / "out"
    first = magpie(backend="fake", model="fake", num_rows=6, batch_size=3, output_dir=out)
    user_calls = [c for c in fake.calls if all(isinstance(p, str) and p.endswith("user\n") for p in c[0])]
    reply_calls = [c for c in fake.calls if c not in user_calls]
    tokens = first["usage"]
    assert tokens["magpie"]["prompt_tokens"] == words(p for c in user_calls for p in c[0])
    assert tokens["magpie_response"]["prompt_tokens"] == words(p for c in reply_calls for p in c[0])
    assert tokens["magpie"]["completion_tokens"] > 0 and tokens["magpie"]["generations"] == 6
    assert tokens["magpie"]["batches"] == 2 and tokens["magpie"]["cached_batches"] == 0
    assert tokens["magpie"]["completion_tokens_per_second"] > 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved["usage"] == tokens
    assert "## Tokens" in (out / "README.md").read_text()

    fake.calls.clear()
    again = magpie(backend="fake", model="fake", num_rows=6, batch_size=3, output_dir=out)
    assert fake.calls == []  # every batch from cache, and its usage with it
    for stage in ("magpie", "magpie_response"):
        assert again["usage"][stage]["cached_batches"] == again["usage"][stage]["batches"] == 2
        assert again["usage"][stage]["prompt_tokens"] == tokens[stage]["prompt_tokens"]
    report = usage.markdown(again["usage"])
    assert "4 batches came from cache" in report


def test_the_progress_artifact_shows_the_tokens_so_far(tmp_path, fake):
    magpie(backend="fake", model="fake", num_rows=4, batch_size=2, output_dir=tmp_path / "out")
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["magpie-magpie-tokens"])),
            limit=1,
        )
    assert artifact.type == "progress" and artifact.data == 100.0
    assert "prompt +" in artifact.description and "completion tokens" in artifact.description


def test_every_stage_of_the_main_job_is_counted(tmp_path, fake):
    summary = instruct(backend="fake", model="fake", num_instructions=2, output_dir=tmp_path / "out")
    assert {"self_instruct", "evol_instruct", "respond"} <= set(summary["usage"])
    assert sum(s["prompt_tokens"] for s in summary["usage"].values()) == words(fake.prompts)


def test_a_servers_usage_is_what_gets_counted(tmp_path):
    with StandIn("llama", props=LLAMA3_PROPS) as server:
        summary = magpie(backend="openai", model=server.model, num_rows=4, output_dir=tmp_path / "out")
        bodies = server.posts("/v1/completions")[1:]  # after check_raw_prompts' 1-token probe
    answers = [server.complete(body)["usage"] for body in bodies]
    counted = summary["usage"]
    assert sum(s["prompt_tokens"] for s in counted.values()) == sum(a["prompt_tokens"] for a in answers)
    assert sum(s["completion_tokens"] for s in counted.values()) == sum(
        a["completion_tokens"] for a in answers
    )


def test_intervals_that_overlap_count_once():
    total = usage.add({}, {"s": {**usage._empty(), "completion_tokens": 10, "intervals": [[0.0, 2.0]]}})
    usage.add(total, {"s": {**usage._empty(), "completion_tokens": 10, "intervals": [[1.0, 3.0]]}}, True)
    [entry] = usage.summary(total).values()
    assert entry["seconds"] == 3.0 and entry["completion_tokens_per_second"] == round(20 / 3, 1)
    assert (entry["batches"], entry["cached_batches"]) == (2, 1)
