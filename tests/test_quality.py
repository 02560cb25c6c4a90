import pytest

from tasks.quality.metrics import (
    distinct_n,
    mean_pairwise_rouge_l,
    quality_markdown,
    quality_metrics,
    write_plots,
)


@pytest.mark.parametrize(
    "texts, n, expected",
    [
        (["a b c", "a b d"], 1, 4 / 6),
        (["a b c", "a b d"], 2, 3 / 4),
        (["same same same"], 1, 1 / 3),
        ([], 1, 0.0),
    ],
)
def test_distinct_n(texts, n, expected):
    assert distinct_n(texts, n) == pytest.approx(expected)


def test_mean_pairwise_rouge_l_is_one_for_copies_and_zero_for_disjoint_texts():
    assert mean_pairwise_rouge_l(["a b c"] * 5) == 1.0
    assert mean_pairwise_rouge_l(["a b", "c d", "e f", "g h"]) == 0.0


def test_metrics_and_report(tmp_path):
    rows = [
        {"instruction": "What causes tides?", "response": "The Moon.", "evol_depth": 0, "mutations": []},
        {
            "instruction": "Explain tides in depth, step by step.",
            "response": "Gravity pulls oceans.",
            "evol_depth": 1,
            "mutations": ["reasoning"],
        },
    ]
    metrics = quality_metrics(rows, evolved=True)
    assert metrics["evol_depth"] == {0: 1, 1: 1} and metrics["mutations"] == {"reasoning": 1}
    assert metrics["fields"] == ["instruction", "response"] and metrics["words"]["instruction"]["max"] == 7
    text = quality_markdown(metrics)
    assert "distinct_2" in text and "mean_pairwise_rouge_l" in text and "Mutation mix" in text
    assert write_plots(rows, tmp_path, metrics) == ["lengths.png", "evol_depth.png"]
    assert (tmp_path / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert "evol_depth" not in quality_metrics(rows) and "Mutation mix" not in quality_markdown(
        quality_metrics(rows)
    )


def test_metrics_cover_every_turn_of_a_conversation_and_any_text_column():
    from tasks.quality.metrics import text_fields

    rows = [
        {
            "id": "a",
            "model": "m",
            "system_prompt": "You are terse.",
            "conversation": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Why is the sky blue?"},
                {"role": "assistant", "content": "Rayleigh scattering of sunlight."},
                {"role": "user", "content": "And sunsets red?"},
                {"role": "assistant", "content": "Longer path through air."},
            ],
        },
        {"id": "b", "haiku": "rain on the tin roof", "title": "Tin", "techniques": ["haiku"]},
    ]
    assert text_fields(rows) == {
        "user_turns": ["Why is the sky blue?", "And sunsets red?"],
        "assistant_turns": ["Rayleigh scattering of sunlight.", "Longer path through air."],
        "haiku": ["rain on the tin roof"],
        "title": ["Tin"],
    }
    metrics = quality_metrics(rows)
    assert metrics["texts"]["user_turns"] == 2 and metrics["words"]["assistant_turns"]["max"] == 4
