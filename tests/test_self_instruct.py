import pytest

from tasks.passage_queries import build_messages, clean_line, parse_instructions
from tasks.templates import prompts

CONTEXT = "Honeybees communicate the location of food with a waggle dance in the hive."
BOILERPLATE = prompts.render("self_instruct.jinja", context="", num_instructions=5)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("1. What is a waggle dance?", "What is a waggle dance?"),
        ("2) Why do bees dance?", "Why do bees dance?"),
        ("(3) How far do bees fly?", "How far do bees fly?"),
        ("- Describe the dance.", "Describe the dance."),
        ("* **Explain the angle.**", "Explain the angle."),
        ("• List the steps.", "List the steps."),
        ("Question 4: Who dances?", "Who dances?"),
        ("Q5: Who follows the dancer?", "Who follows the dancer?"),
        ('"What does the run length mean?"', "What does the run length mean?"),
        ("10. - How do bees see the Sun?", "How do bees see the Sun?"),
    ],
)
def test_clean_line_strips_numbering_bullets_and_quotes(line, expected):
    assert clean_line(line) == expected


def test_parse_keeps_requests_and_names_every_drop():
    text = "\n".join(
        [
            "Here are 5 questions:",
            "1. What is a waggle dance?",
            "2. What is a waggle dance?",
            "3. 🐝🐝🐝🐝🐝",
            "",
            "4. Why?",
            "5. Describe how the dance shows the direction of food.",
            "6. Honeybees communicate the location of food with a waggle dance in the hive.",
            "7. List questions or requests that a user could send to an AI assistant",
            "8. The dance is important.",
        ]
    )
    kept, dropped = parse_instructions(text, 5, CONTEXT, BOILERPLATE)
    assert kept == ["What is a waggle dance?", "Describe how the dance shows the direction of food."]
    assert dict(dropped) == {
        "Here are 5 questions:": "not_a_request",
        "What is a waggle dance?": "duplicate",
        "🐝🐝🐝🐝🐝": "empty",
        "Why?": "too_short",
        CONTEXT: "copied_context",
        "List questions or requests that a user could send to an AI assistant": "echo_of_prompt",
        "The dance is important.": "not_a_request",
    }


def test_parse_splits_inline_numbered_lists_and_caps_the_count():
    text = "1. What is a clone? 2. How does Git work? 3. What is a branch? 4. Why merge?"
    kept, dropped = parse_instructions(text, 2, CONTEXT)
    assert kept == ["What is a clone?", "How does Git work?"]
    assert ("What is a branch?", "over_cap") in dropped


def test_no_query_keeps_its_list_number():
    text = "\n".join(f"{i}. What does step {i} of the dance show?" for i in range(1, 6))
    kept, _ = parse_instructions(text, 5, CONTEXT)
    assert len(kept) == 5 and not any(q[0].isdigit() for q in kept)


def test_build_messages_puts_the_context_in_one_user_turn():
    messages = build_messages({"seed_id": "bees", "context": CONTEXT}, 4)
    assert [m["role"] for m in messages] == ["user"]
    assert CONTEXT in messages[0]["content"] and "4" in messages[0]["content"]
