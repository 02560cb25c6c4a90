"""The filters against real generations labelled by hand (tests/fixtures/): no mistakes.

instructions.jsonl: every distinct query SelfInstruct wrote on the embedded model over the shipped
passages and bench/passages/ (six runs: two seeds, two prompts), each read and labelled `keep`,
`needs_context` or `unclear` (a judgement call either way; not asserted). evolutions.jsonl: every
evolution of one EvolInstruct round on the embedded model (none is a real rewrite, as the 135M model
writes none), the two the issue saw kept, and hand-written rewrites of the kind a larger model writes.
grounded_answers.jsonl: grounded answers of the embedded model over bench/passages/dated_events.jsonl,
other_domains.jsonl and the shipped passages: every one the figure check flagged, each read and
labelled `invented_figure` or `outside_fact` (true, but from the model's memory), and answers whose
figures all come from their passage (`from_passage`), some of them put in the wrong place.
"""

import json
from pathlib import Path

import pytest

from tasks.evol_instruct import eliminate, parse_evolution
from tasks.passage_queries import parse_instructions
from tasks.quality.figures import unsupported_figure
from tasks.quality.filters import refusal
from tasks.quality.self_contained import needs_context
from tasks.self_instruct import check_candidate

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in open(FIXTURES / name, encoding="utf-8")]


def test_needs_context_makes_no_mistake_on_labelled_instructions():
    rows = [r for r in load("instructions.jsonl") if r["label"] != "unclear"]
    assert len(rows) > 300 and sum(r["label"] == "needs_context" for r in rows) > 30
    wrong = [
        (r["label"], r["text"])
        for r in rows
        if bool(needs_context(r["text"])) != (r["label"] == "needs_context")
    ]
    assert wrong == []


def test_selfinstruct_drops_what_needs_its_passage_with_the_reason():
    text = "1. How does it work?\n2. What causes spring tides?\n3. What is the purpose of the vaccine?"
    kept, dropped = parse_instructions(text, 5, context="Tides rise and fall with the Moon.")
    assert kept == ["What causes spring tides?"]
    assert dropped == [
        ("How does it work?", "needs_context"),
        ("What is the purpose of the vaccine?", "needs_context"),
    ]


def test_selfinstruct_drops_requests_for_more_queries_with_the_reason():
    """The 135M model sometimes restates its own task as a query (seen in a flow run's rows); a
    user's request for a prompt or a query of their own stays."""
    text = (
        "1. Can you provide a prompt that asks about the implementation of Git?\n"
        "2. Write three questions about Git branches.\n"
        "3. How do I write a prompt for a language model?\n"
        "4. Can you write a SQL query that finds duplicate rows?"
    )
    kept, dropped = parse_instructions(text, 5, context="Git is a version control system.")
    assert kept == [
        "How do I write a prompt for a language model?",
        "Can you write a SQL query that finds duplicate rows?",
    ]
    assert [reason for _, reason in dropped] == ["meta_request", "meta_request"]


@pytest.mark.parametrize(
    "text",
    [
        'What is the meaning of "adverse possession" in the context of English law?',
        "How long does it take to bake sourdough bread?",
        "Is it possible to make a promise that does not have consideration?",
        "What was the purpose of the printing press?",
        "What is the atmosphere made of?",
        "What is a beta cell, and how does it impact insulin regulation?",
        "Can you expand on the Reformation? What was it, and how did it impact society?",
    ],
)
def test_self_contained_questions_are_kept(text):
    assert needs_context(text) is None


def test_elimination_makes_no_mistake_on_labelled_evolutions():
    rows = load("evolutions.jsonl")
    assert sum(r["label"] == "keep" for r in rows) >= 10 and sum(r["label"] == "drop" for r in rows) > 200
    wrong = [
        (r["label"], r["mutation"], r["text"][:80])
        for r in rows
        if (eliminate(parse_evolution(r["text"]), r["parent"], r["mutation"]) is None)
        != (r["label"] == "keep")
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "parent, mutation, text, reason",
    [
        (
            "How did the Peace of Westphalia affect the Holy Roman Empire?",
            "deepening",
            "How does the Peace of Westphalia influence international relations?  Here's a solution with a "
            "shorter and more detailed answer:  The Peace of Westphal",
            "meta_talk",
        ),
        (
            "What is Mitochondria?",
            "reasoning",
            "What is Mitochondria?\nThis prompt requires multiple-step reasoning to answer it.",
            "meta_talk",
        ),
        (
            "What are the primary causes of antibiotic resistance?",
            "reasoning",
            "What causes antibiotic resistance? "
            "The primary causes of antibiotic resistance are the overuse and misuse of antibiotics.",
            "answer_text",
        ),
        (
            "What causes tides?",
            "deepening",
            "What causes the tides on the coasts of Europe and how do they",
            "unfinished",
        ),
        (
            "What is antibiotic resistance?",
            "deepening",
            "How do lawyers draft wills so that heirs avoid probate disputes?",
            "lost_subject",
        ),
        (
            "What is insulin?",
            "deepening",
            "What is insulin, and how does it work in this process?",
            "needs_context",
        ),
    ],
)
def test_each_evolution_defect_has_its_reason(parent, mutation, text, reason):
    assert eliminate(parse_evolution(text), parent, mutation) == reason


def test_magpie_filters_make_no_mistake_on_a_labelled_run():
    """magpie.jsonl: the 60 rows of one Magpie run on the embedded model and the refusals it
    dropped, each user turn and each response read and labelled by hand."""
    rows = [r for r in load("magpie.jsonl") if r["label"] != "unclear"]
    turns = [r for r in rows if r["kind"] == "user_turn"]
    answers = [r for r in rows if r["kind"] == "response"]
    assert len(turns) > 50 and sum(r["label"] == "refusal" for r in answers) >= 10
    wrong = [
        r["text"][:80] for r in turns if bool(needs_context(r["text"])) != (r["label"] == "needs_context")
    ]
    wrong += [r["text"][:80] for r in answers if bool(refusal(r["text"])) != (r["label"] == "refusal")]
    assert wrong == []


def test_bootstrap_filters_make_no_mistake_on_a_labelled_run():
    """bootstrap.jsonl: the candidates of one Self-Instruct bootstrap run on the embedded model (kept,
    and dropped by the content filters), labelled by hand, and the residue the issue saw kept."""
    rows = [r for r in load("bootstrap.jsonl") if r["label"] != "unclear"]
    assert len(rows) > 50 and sum(r["label"] == "drop" for r in rows) >= 10
    assert [r["text"] for r in rows if (check_candidate(r["text"]) is None) != (r["label"] == "keep")] == []


PASSAGE_FILES = [
    Path(__file__).parents[1] / "data" / "seed_contexts.jsonl",
    *sorted((Path(__file__).parents[1] / "bench" / "passages").glob("*.jsonl")),
]


def test_the_figure_check_flags_figures_no_passage_states_and_no_others():
    """Every flagged answer stated a figure its passage and question never do: 22 of the 23 were
    wrong, one a true fact from the model's memory (the check cannot tell them apart). Answers that
    only repeat the passage's figures pass, even where they put one in the wrong place."""
    passages = {row["id"]: row["context"] for path in PASSAGE_FILES for row in map(json.loads, open(path))}
    answers = load("grounded_answers.jsonl")
    for answer in answers:
        source = f"{passages[answer['seed_id']]} {answer['instruction']}"
        flagged = unsupported_figure(answer["response"], source) == "unsupported_figure"
        assert flagged == (answer["label"] != "from_passage"), answer
