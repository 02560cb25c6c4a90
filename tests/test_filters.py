import pytest

from tasks.quality import filters
from tasks.quality.figures import unsupported_figure


@pytest.mark.parametrize(
    "text, reason",
    [
        ("What causes spring tides?", None),
        ("", "empty"),
        ("?!... ---", "empty"),
    ],
)
def test_empty(text, reason):
    assert filters.empty(text) == reason


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Explain how a sourdough starter makes bread rise.", None),
        ("🌊🌊🌊🌊 🌙🌙🌙 ✨✨✨", "degenerate"),
        ("the the the the the the the the the", "degenerate"),
        ("tides tides tides tides tides tides and more", "degenerate"),
        ("Bake it.\nBake it.\nBake it.\nBake it.\nServe.", "degenerate"),
        ("The prompt is flexible and useful. " * 12, "degenerate"),
        ("A branch and why they are so convenient: " * 3, "degenerate"),  # kept in a flow run
        ("Sift the flour, sift the flour, sift the flour and bake.", "degenerate"),
        ("Sift the flour twice, then sift the flour again.", None),  # twice in a row is fine
        ("Step by step, step by step: that is how a loan is paid back.", None),  # 3 words, twice
        ("F = (1/2) * (1 + 1/2) * (1 + 1/2 + 1/4): the fracture's geometry.", None),  # numbers
    ],
)
def test_degenerate(text, reason):
    assert filters.degenerate(text) == reason


def test_echo_by_marker_and_by_shared_words():
    boilerplate = "Rewrite the given prompt into a more complex version that is harder to handle"
    assert filters.echoes("#Rewritten Prompt#: foo", boilerplate, markers=("#rewritten prompt#",))
    assert filters.echoes("Sure: rewrite the given prompt into a more complex one", boilerplate)
    assert filters.echoes("How do tides depend on the Moon?", boilerplate) is None


@pytest.mark.parametrize(
    "candidate, parent, reason",
    [
        ("What causes tides?", "What causes tides?", "near_identical"),
        ("what causes tides", "What causes tides?", "near_identical"),
        ("What causes tides?", "What causes tides on Earth and on Mars?", "no_new_information"),
        ("What causes tides, and how do spring tides differ in height?", "What causes tides?", None),
    ],
)
def test_no_gain(candidate, parent, reason):
    assert filters.no_gain(candidate, parent) == reason


@pytest.mark.parametrize(
    "response, reason",
    [
        ("I'm sorry, but I cannot help with that.", "refusal"),
        ("As an AI, I do not have access to the internet.", "refusal"),
        ("Tides come from the Moon's gravity. " * 20 + "Sorry for the length.", None),
        ("Tides come from the Moon's gravity.", None),
    ],
)
def test_refusal(response, reason):
    assert filters.refusal(response) == reason


@pytest.mark.parametrize(
    "text, reason",
    [
        ("What causes tides?", None),
        ("Explain compound interest with an example.", None),
        ("Given the table below, compute the total.\n| a | 1 |", None),
        ("The process of training vaccines is complex.", "not_a_request"),
        ("I'm ready to assist you. What's your request?", "assistant_voice"),
    ],
)
def test_not_a_request(text, reason):
    assert filters.not_a_request(text) == reason


def test_rouge_l():
    assert filters.rouge_l("a b c d", "a b c d") == 1.0
    assert filters.rouge_l("a b c d", "x y z") == 0.0
    assert filters.rouge_l("a b c d", "a c") == pytest.approx(2 * (2 / 4 * 1.0) / (2 / 4 + 1.0))


@pytest.mark.parametrize(
    "response, reason",
    [
        ("According to the reference text, tides follow the Moon.", "mentions_prompt"),
        ("The text suggests that saving 1,050 euros early pays off.", "mentions_prompt"),
        ("1. The text is about compound interest.", "mentions_prompt"),
        ("The answer to the question is: the Moon.", "mentions_prompt"),
        ('Premise: "Premise 1"  Question: How?  Answer:', "mentions_prompt"),
        ("The answer to this question depends on the interest rate.", None),
        ("The passage of time changes the tides only slowly.", None),
    ],
)
def test_mentions_prompt(response, reason):
    assert filters.mentions_prompt(response) == reason


@pytest.mark.parametrize(
    "response, instruction, reason",
    [
        (
            "The tides occur on land versus at sea.",
            "How do the tides occur on land versus at sea?",
            "non_answer",
        ),
        ("I'm ready to help. What's your next question?", "How to use Git?", "non_answer"),
        ("Why do we use Git?  The answer is:", "Why do we use Git?", "non_answer"),
        ("The answer is: Git tracks changes.", "Why do we use Git?", None),
        ("Tides come from the Moon's pull on the oceans.", "What causes tides?", None),
        (
            "I'd be happy to help! "
            + "Git records snapshots of your files and lets you branch cheaply. " * 3,
            "How to use Git?",
            None,
        ),
    ],
)
def test_non_answer(response, instruction, reason):
    assert filters.non_answer(response, instruction) == reason


def test_a_long_answer_that_opens_by_declining_is_a_refusal():
    opening = "I'm sorry for your loss, but as a chatbot, I don't have the ability to access real-time data. "
    assert filters.refusal(opening + "Here is some general advice about travel. " * 20) == "refusal"
    assert (
        filters.refusal("I'm sorry to hear that. " + "Here is how to plan the trip step by step. " * 20)
        is None
    )


PANTHEON = "The Pantheon was completed under Hadrian around 126 AD. Its dome is 43.3 metres across."


@pytest.mark.parametrize(
    "answer, source, reason",
    [
        ("It was built in 121 AD.", PANTHEON, "unsupported_figure"),
        ("The Games took place from 1936 to 1938.", "The 1908 London Olympics.", "unsupported_figure"),
        (
            "The normal range is 130-139 mmHg.",
            "120 over 80 is normal, 130 over 80 high.",
            "unsupported_figure",
        ),
        ("Its dome, about 43 metres wide, dates from 126 AD.", PANTHEON, None),  # a rounding of 43.3
        ("Built around 126 AD, in the 120s.", PANTHEON, None),  # a decade
        ("After 12 years the occupier gains title.", "The period is twelve years, since 1925.", None),
        ("1. Dome\n2. Oculus\n10. Porch\n11. Walls", PANTHEON, None),  # list numbering
        ("It has 2 parts and 3 doors.", PANTHEON, None),  # single digits
        ("The US Constitution dates from 1776.", "A writ orders a jailer to bring a prisoner.", None),
        ("The 1997 act made it independent.", PANTHEON + " What did the 1997 act do?", None),  # asked
        ("Heard 3,000 kilometres away.", "The blast was heard more than 3,000 kilometres away.", None),
    ],
)
def test_unsupported_figure(answer, source, reason):
    assert unsupported_figure(answer, source) == reason
