"""The run facts a report and card state, read off rows and drop records: the techniques that ran,
outputs cut at the token limit per stage, and local paths kept out of the card."""

from pathlib import Path

import pytest

from tasks.data.card import citations, public
from tasks.data.report import techniques_used, truncation


def test_truncation_counts_flagged_rows_and_dropped_outputs_per_stage():
    rows = [
        {"techniques": ["self_instruct", "evol_instruct", "respond"], "response_truncated": True},
        {"techniques": ["self_instruct", "respond"], "response_truncated": False},
        {"techniques": ["self_instruct", "respond"], "response_truncated": True},
    ]
    drops = [
        {"stage": "evol_instruct", "reason": "truncated"},
        {"stage": "evol_instruct", "reason": "near_identical"},
        {"stage": "respond", "reason": "degenerate"},
        {"stage": "self_instruct", "reason": "duplicate"},
    ]
    assert truncation(rows, drops) == {
        "evol_instruct": {"hit": 1, "of": 3},
        "respond": {"hit": 2, "of": 4},
    }


def test_magpie_user_turns_that_never_end_count_as_cut_off():
    rows = [{"techniques": ["magpie", "magpie_response"], "response_truncated": False}]
    drops = [{"stage": "magpie", "reason": "no_end_of_turn"}, {"stage": "magpie", "reason": "too_short"}]
    assert truncation(rows, drops) == {"magpie": {"hit": 1, "of": 3}, "magpie_response": {"hit": 0, "of": 1}}


def test_a_round_that_kept_nothing_still_ran():
    counts = {"self_instruct": 4, "evol_instruct_1": 0, "respond": 4}
    drops = [{"stage": "evol_instruct", "reason": "echo_of_prompt"}]
    rows = [{"techniques": ["self_instruct", "respond"]}]
    assert techniques_used(rows, counts, drops) == ["evol_instruct", "respond", "self_instruct"]
    assert "arXiv:2304.12244" in citations(["self_instruct", "evol_instruct", "respond"])
    assert "arXiv:2212.10560" in citations(["self_instruct_bootstrap"])
    assert "arXiv:2406.08464" in citations(["magpie", "magpie_response"])
    assert "no technique paper" in citations(["write_prompt", "respond"])


@pytest.mark.parametrize(
    "value, shown",
    [
        ("/home/me/data/seeds.jsonl", "seeds.jsonl"),
        (Path("/srv/out/instruct"), "instruct"),
        ("output/instruct", "output/instruct"),
        ("me/tides-qa", "me/tides-qa"),
        ("{{ topic }}\n/not/a/path", "{{ topic }}\n/not/a/path"),
        ({"a": ["/x/y.jinja", 3, None]}, {"a": ["y.jinja", 3, None]}),
    ],
)
def test_local_paths_are_cut_to_their_names(value, shown):
    assert public(value) == shown
