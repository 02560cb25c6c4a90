import pytest

from tasks import filters


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
