"""Every flow's card and report tell the truth about that flow: the papers of the techniques it
used and only their statistics, the licence, pretty name and schema in the YAML, the plots, the
outputs cut at the token limit, the evolutions each round kept, and a sample table that shows
conversations."""

import json

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.generate import generate
from flows.instruct import instruct
from flows.magpie import magpie
from tasks.backends.fake import fake_text, prompt_text

pytestmark = pytest.mark.usefixtures("prefect_server")

FAKE = {"backend": "fake", "model": "fake"}
SELF_INSTRUCT, WIZARDLM, MAGPIE = "arXiv:2212.10560", "arXiv:2304.12244", "arXiv:2406.08464"


def card(path):
    text = (path / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def latest_artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    data = found[0].data
    if found[0].type == "table" and isinstance(data, str):
        return json.loads(data)
    return data


def test_a_magpie_card_cites_magpie_only_and_states_licence_name_and_schema(tmp_path, fake):
    magpie(**FAKE, num_rows=3, n_turns=2, output_dir=tmp_path / "out")
    front, body = card(tmp_path / "out")
    assert MAGPIE in body and SELF_INSTRUCT not in body and WIZARDLM not in body
    assert "WizardLM" not in body and "Mutation mix" not in body and "Evolution depth" not in body
    assert front["license"] == "other" and front["pretty_name"]
    names = [f["name"] for f in front["dataset_info"]["features"]]
    assert {"conversation", "instruction", "response", "system_prompt", "chat_template"} <= set(names)
    conversation = next(f for f in front["dataset_info"]["features"] if f["name"] == "conversation")
    assert conversation["list"] == [
        {"name": "role", "dtype": "string"},
        {"name": "content", "dtype": "string"},
    ]


def test_the_licence_is_a_flow_parameter(tmp_path, fake):
    instruct(**FAKE, num_instructions=2, license="apache-2.0", output_dir=tmp_path / "out")
    front, body = card(tmp_path / "out")
    assert front["license"] == "apache-2.0" and "## License" in body


def test_cards_cite_the_papers_of_the_techniques_that_ran(tmp_path, fake):
    instruct(**FAKE, num_instructions=2, num_evolutions=0, output_dir=tmp_path / "plain")
    _, body = card(tmp_path / "plain")
    assert SELF_INSTRUCT in body and WIZARDLM not in body and MAGPIE not in body
    assert "Mutation mix" not in body and "evol_depth.png" not in body
    instruct(**FAKE, num_instructions=2, num_evolutions=1, output_dir=tmp_path / "evolved")
    _, body = card(tmp_path / "evolved")
    assert SELF_INSTRUCT in body and WIZARDLM in body and MAGPIE not in body and "Mutation mix" in body
    generate(**FAKE, instruction=["ask about tides"], output_dir=tmp_path / "generate")
    _, body = card(tmp_path / "generate")
    assert not any(paper in body for paper in (SELF_INSTRUCT, WIZARDLM, MAGPIE))


def test_the_card_shows_the_plots_written_beside_it(tmp_path, fake):
    instruct(**FAKE, num_instructions=2, output_dir=tmp_path / "out")
    _, body = card(tmp_path / "out")
    for plot in ("lengths.png", "evol_depth.png"):
        assert f"]({plot})" in body and (tmp_path / "out" / plot).read_bytes()[:4] == b"\x89PNG"


def test_a_two_turn_magpie_report_and_sample_cover_every_turn(tmp_path, fake):
    summary = magpie(**FAKE, num_rows=3, n_turns=2, output_dir=tmp_path / "out")
    sample = latest_artifact("magpie-sample")
    assert len(sample) == 3 and all(row.get("conversation") for row in sample)
    assert all(row["conversation"].count("user: ") == 2 for row in sample)
    quality = summary["quality"]
    assert quality["texts"] == {"user_turns": 6, "assistant_turns": 6}
    assert quality["words"]["assistant_turns"]["max"] > 0 and quality["distinct_1"]["user_turns"] > 0
    assert "user_turns" in latest_artifact("magpie-report")


def test_the_report_counts_responses_cut_at_the_token_limit(tmp_path, fake):
    summary = instruct(**FAKE, num_instructions=2, max_new_tokens=12, output_dir=tmp_path / "out")
    rows = [json.loads(line) for line in open(tmp_path / "out" / "data.jsonl")]
    cut = sum(r["response_truncated"] for r in rows)
    respond_drops = sum(n for reason, n in summary["drops"].items() if reason.startswith("respond:"))
    assert 0 < cut < len(rows)
    assert summary["truncation"]["respond"] == {"hit": cut, "of": len(rows) + respond_drops}
    report = latest_artifact("instruct-report")
    assert f"| respond | {cut} of {len(rows) + respond_drops} " in report


def test_the_report_counts_evolutions_kept_not_rows_passing_through(tmp_path, fake):
    def no_evolution(prompt, params):
        text = prompt_text(prompt)
        if "Prompt Rewriter" in text or "Prompt Creator" in text:
            return "#Rewritten Prompt#: the given prompt again"
        return fake_text(prompt, params)

    fake.responder = no_evolution
    summary = instruct(**FAKE, num_instructions=2, num_evolutions=1, output_dir=tmp_path / "out")
    queries = summary["rows_per_stage"]["self_instruct"]
    assert summary["rows_per_stage"]["evol_instruct_1"] == 0
    assert summary["evolutions"] == [{"round": 1, "kept": 0, "of": queries}]
    assert f"| 1 | 0 of {queries} |" in (tmp_path / "out" / "README.md").read_text()


def test_the_documented_compose_your_own_flow_report_measures_its_own_columns(tmp_path, fake):
    from tests.test_flow_generate import NOTEBOOK_DOC, doc_snippet

    namespace = {"__name__": "notebook_doc"}
    exec(compile(doc_snippet("pipeline"), NOTEBOOK_DOC, "exec"), namespace)
    summary = namespace["haiku"](backend="fake", model="fake", output_dir=str(tmp_path / "haiku"))
    quality = summary["quality"]
    assert {"haiku", "title"} <= set(quality["fields"])
    assert quality["texts"]["haiku"] == quality["texts"]["title"] == 2
    assert quality["words"]["haiku"]["min"] > 0 and quality["distinct_2"]["title"] > 0
    assert set(summary["truncation"]) == {"haiku", "title"}
    sample = latest_artifact("haiku-sample")
    assert all(row["haiku"] and row["title"] for row in sample)
