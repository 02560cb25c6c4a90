"""Self-Instruct's bootstrap, pure parts: the paper's filters, the numbered prompt and its parser,
in-context sampling, and seed tasks in the paper's format."""

import json

import pytest

from tasks.data.seed_tasks import load_seed_tasks
from tasks.data.seeds import SeedError
from tasks.quality.near_duplicates import NearDuplicateIndex
from tasks.self_instruct import admit, build_prompt, check_candidate, parse_tasks, sample_examples

POOL = ["Write a haiku about the first cold morning of autumn.", "Translate a short greeting into French."]


@pytest.mark.parametrize(
    "candidate, reason",
    [
        ("Suggest three names for a bakery that opens early.", None),
        ("Explain how a bicycle gear works to a beginner.", None),
        ("Write a short résumé for a junior chef at a café.", None),  # accents are still English
        ("Summarize the plot of a novel you like in two sentences.", "unsupported_keyword"),  # as the paper
        ("Write a haiku about the first cold morning of autumn!", "similar_to_pool"),
        ("Write a haiku about the first cold morning of spring.", "similar_to_pool"),
        ("Translate this.", "too_short"),
        ("Summarize it now", "too_short"),
        ("Describe " + "the very long journey " * 40, "too_long"),
        ("Draw a cat sitting on a fence at sunset.", "unsupported_keyword"),
        ("Describe the image of a lighthouse in the storm.", "unsupported_keyword"),
        ("Go to the website and copy its headline for me.", "unsupported_keyword"),
        ("Summarize the attached files in three bullet points.", "unsupported_keyword"),
        ('"Write a letter to a landlord about a leak."', "starts_with_punctuation"),
        ("- List five kinds of cheese from France please.", "starts_with_punctuation"),
        ("Écris une lettre à ton voisin pour le remercier.", "non_english"),
        ("Напишите короткое письмо другу о поездке домой.", "non_english"),
        ("Write write write write write write write write write now.", "degenerate"),
    ],
)
def test_a_candidate_is_kept_or_dropped_with_the_papers_reason(candidate, reason):
    pool = NearDuplicateIndex(POOL)
    kept, drops = admit([candidate], pool, threshold=0.7, round_=3)
    if reason is None:
        assert kept == [candidate] and drops == [] and len(pool) == 3  # it joined the pool
    else:
        assert kept == [] and [(d["reason"], d["round"], d["text"]) for d in drops] == [
            (reason, 3, candidate)
        ]


def test_a_similar_drop_names_the_instruction_it_repeats():
    _, drops = admit([POOL[1] + " please"], NearDuplicateIndex(POOL), threshold=0.7, round_=1)
    assert drops[0]["similar_to"] == POOL[1] and 0.7 <= drops[0]["score"] < 1


def test_a_round_cannot_keep_two_near_copies():
    kept, drops = admit(
        ["Plan a picnic menu for six people.", "Plan a picnic menu for eight people."],
        NearDuplicateIndex(),
        0.7,
        1,
    )
    assert kept == ["Plan a picnic menu for six people."] and drops[0]["reason"] == "similar_to_pool"


def test_check_candidate_accepts_a_plain_instruction():
    assert check_candidate("Give me a recipe for a quick tomato soup.") is None


def test_prompt_numbers_the_examples_and_ends_at_the_next_number():
    prompt = build_prompt([{"instruction": "Name a river:"}, {"instruction": "Write  a\npoem."}])
    lines = prompt.splitlines()
    assert lines[0].startswith("Come up with a series of tasks")
    assert lines[1:] == ["Task 1: Name a river", "Task 2: Write a poem.", "Task 3:"]


@pytest.mark.parametrize(
    "text, truncated, candidates, dropped",
    [
        (
            "Plan a trip.\nTask 10: Write a poem.\nTask 11: Name a bird.",
            False,
            ["Plan a trip.", "Write a poem.", "Name a bird."],
            [],
        ),
        (
            "Plan a trip.\n10. Write a poem.\n11) Name a bird.",
            False,
            ["Plan a trip.", "Write a poem.", "Name a bird."],
            [],
        ),
        ("Plan a trip. Task 10: Write a poem.", False, ["Plan a trip.", "Write a poem."], []),
        ("Plan a trip\nfor two.\nTask 10: Write", False, ["Plan a trip for two.", "Write"], []),
        ("Plan a trip.\nTask 10: Write a po", True, ["Plan a trip."], [("Write a po", "truncated")]),
        (
            "Plan a trip.\n\nI hope this helps you!",
            False,
            ["Plan a trip."],
            [("I hope this helps you!", "after_list")],
        ),
        (
            "Plan a trip.\nCome up with a series of tasks:\nTask 1: x",
            True,
            ["Plan a trip."],
            [("Come up with a series of tasks:\nTask 1: x", "echo_of_prompt")],
        ),
        ("", False, [], []),
        ("\nTask 10: Write a poem.", False, ["Write a poem."], []),
    ],
)
def test_parse_tasks(text, truncated, candidates, dropped):
    assert parse_tasks(text, truncated) == (candidates, dropped)


def test_in_context_sampling_is_fixed_by_seed_and_round_and_mixes_the_pools():
    seeds = [{"seed_id": f"s{i}", "instruction": f"seed {i}"} for i in range(20)]
    generated = [{"id": f"g{i}", "instruction": f"gen {i}"} for i in range(10)]
    first = sample_examples(seeds, generated, seed=0, round_=2, prompt_index=0)
    assert first == sample_examples(seeds, generated, seed=0, round_=2, prompt_index=0)
    assert first != sample_examples(seeds, generated, seed=0, round_=3, prompt_index=0)
    assert first != sample_examples(seeds, generated, seed=1, round_=2, prompt_index=0)
    assert len(first) == 8 and sum("id" in e for e in first) == 2
    assert len(sample_examples(seeds, [], seed=0, round_=1, prompt_index=0)) == 8  # all seeds at first


def test_the_shipped_seed_tasks_load_and_pass_the_filters():
    tasks = load_seed_tasks()
    assert 20 <= len(tasks) <= 40
    assert len({t["seed_id"] for t in tasks}) == len(tasks)
    assert all(t["instruction"] and t["output"] for t in tasks)
    # A seed task that comes with an input may point at it ("the product review"); a generated
    # task has no input, so the same words make it unanswerable: the only reason those fail.
    alone = [t for t in tasks if not t.get("input")]
    assert alone and [t["instruction"] for t in alone if check_candidate(t["instruction"])] == []
    with_input = {check_candidate(t["instruction"]) for t in tasks if t.get("input")}
    assert with_input <= {None, "needs_context"}


def test_seed_tasks_in_the_papers_format_and_flat(tmp_path):
    path = tmp_path / "seed_tasks.jsonl"
    paper = {
        "id": "seed_task_0",
        "name": "breakfast_suggestion",
        "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
        "instances": [{"input": "", "output": "Yes, oatmeal."}],
        "is_classification": False,
    }
    flat = {"instruction": "Sort the numbers.", "input": "3, 1, 2", "output": "1, 2, 3"}
    path.write_text(json.dumps(paper) + "\n" + json.dumps(flat) + "\n")
    first, second = load_seed_tasks(path)
    assert first["seed_id"] == "seed_task_0" and first["output"] == "Yes, oatmeal."
    assert second["input"] == "3, 1, 2" and second["seed_id"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"name": "x"}', "line 1: no 'instruction' text"),
        ('{"instruction": "Do it.", "instances": "nope"}', "'instances' must be a list"),
        ("not json", "line 1: not valid JSON"),
    ],
)
def test_bad_seed_tasks_name_the_line_and_the_fix(tmp_path, line, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(SeedError, match=message):
        load_seed_tasks(path)
