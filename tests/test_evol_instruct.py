import pytest

from tasks.evol_instruct import (
    MUTATIONS,
    build_messages,
    choose_mutation,
    eliminate,
    fall_back_to_parent,
    parse_evolution,
    template_for,
)

PARENT = "What causes spring tides?"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#Rewritten Prompt#: What causes spring tides?", "What causes spring tides?"),
        ("**Rewritten Prompt:** Why?", "Why?"),
        ("Here's a rewritten version:\n\nHow do tides vary?", "How do tides vary?"),
        ('"How do tides vary by season?"', "How do tides vary by season?"),
        ("How do tides vary?\nGive two examples.", "How do tides vary?\nGive two examples."),
    ],
)
def test_parse_evolution(text, expected):
    assert parse_evolution(text) == expected


@pytest.mark.parametrize(
    "candidate, reason",
    [
        ("", "empty"),
        ("#The Given Prompt#: What causes spring tides?", "echo_of_prompt"),
        ("The given prompt is a bit too simple, so here it is.", "echo_of_prompt"),
        ("Rewrite the given prompt into a more complex version that is harder", "echo_of_prompt"),
        ("🌊🌊🌊 🌊🌊🌊 🌊🌊", "empty"),
        ("Why 🌊🌊🌊🌊🌊🌊🌊🌊?", "degenerate"),
        ("Spring tides are caused by the alignment of the Sun and the Moon.", "not_a_request"),
        ("What causes spring tides?", "near_identical"),
        ("What causes tides?", "no_new_information"),
        ("What causes spring tides, and why are they higher at full moon than at half moon?", None),
    ],
)
def test_eliminate(candidate, reason):
    assert eliminate(candidate, PARENT, "constraints") == reason


def test_mutation_choice_is_reproducible_and_varied():
    first = [choose_mutation(0, f"row{i}", 1, list(MUTATIONS)) for i in range(60)]
    again = [choose_mutation(0, f"row{i}", 1, list(MUTATIONS)) for i in range(60)]
    other_round = [choose_mutation(0, f"row{i}", 2, list(MUTATIONS)) for i in range(60)]
    assert first == again
    assert first != other_round
    assert set(first) == set(MUTATIONS)


def test_unknown_mutation_names_the_valid_ones():
    with pytest.raises(ValueError, match="deepening"):
        template_for("shuffle")


def test_build_messages_uses_the_mutation_template():
    content = build_messages(PARENT, "breadth")[0]["content"]
    assert "Prompt Creator" in content and PARENT in content


def test_refused_evolution_falls_back_to_its_parent():
    row = {
        "id": "r1",
        "seed_id": "s",
        "instruction": "Evolved?",
        "lineage": [PARENT, "Evolved?"],
        "mutations": ["deepening"],
        "evol_depth": 1,
        "evol_drops": [],
        "techniques": ["self_instruct", "evol_instruct"],
        "templates": ["self_instruct.jinja", "evol_instruct/deepening.jinja"],
    }
    unevolved = {**row, "id": "r2", "evol_depth": 0, "lineage": [PARENT], "mutations": []}
    drops = [
        {"stage": "respond", "reason": "refusal", "row_id": "r1"},
        {"stage": "respond", "reason": "refusal", "row_id": "r2"},
    ]
    fallbacks, new_drops = fall_back_to_parent([row, unevolved], drops)
    assert [r["instruction"] for r in fallbacks] == [PARENT]
    assert fallbacks[0]["evol_depth"] == 0 and fallbacks[0]["evol_drops"] == ["1:deepening:refusal"]
    assert {(d["stage"], d["row_id"]) for d in new_drops} == {("respond", "r2"), ("evol_instruct", "r1")}


def test_an_essay_is_not_a_rewrite():
    essay = "What causes spring tides? " + "The Moon and the Sun pull on the oceans together. " * 8
    assert eliminate(essay, PARENT, "deepening") == "too_long"
