"""Checks that an evolution is a rewritten instruction and nothing else (Evol-Instruct's elimination,
Xu et al., 2023, arXiv:2304.12244, section 3.3, made concrete for what small models write).

The paper drops an evolution that adds no information, that makes the model refuse, that is only
punctuation and stop words, or that copies words from the evolving prompt. Small models fail in
four more ways, each a named reason here:
- `meta_talk`: the rewrite talks about itself or the task ("This prompt requires multiple-step
  reasoning", "Premise: ...", "Here's a solution with a shorter answer");
- `answer_text`: it asks, then answers ("What causes X? The primary causes of X are ...");
- `unfinished`: it stops mid-sentence (no closing punctuation);
- `lost_subject`: an in-depth rewrite no longer asks about its parent's subject, and
  `no_new_information`: it only paraphrases its parent (in-breadth evolution writes a new
  instruction on purpose, so it is exempt from both).
"""

from __future__ import annotations

import re

from tasks.quality.filters import REQUEST_WORDS, words
from tasks.quality.self_contained import GENERIC_WORDS, STOP_WORDS

_META = re.compile(
    r"\b(?:this|the|a|given|original|new|rewritten|complex|above)\s+(?:prompt|premise|question|instruction|"
    r"task|request)\s+(?:is|requires?|asks|involves|can|should|has)\b|\bpremise\s*:|"
    r"\bhere(?:'s| is| are)\s+(?:a|an|the|my|some)\s+(?:\w+\s+)?(?:rewritten|revised|version|solution|"
    r"answer|question|prompt)|\b(?:rewritten|revised)\s+(?:prompt|version|question|instruction)|"
    r"\b(?:this|the|given|original)\s+prompt\b|\banswer\s*:|\bthe answer (?:is|requires|should)\b|"
    r"\brequires? (?:multiple|multi)[- ]step|\bin (?:this|the) (?:version|rewrite)\b|"
    r"\b(?:be )?rewritten as\b|\bthe answer can be\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.?!]+[.?!]*")
_QUESTION_START = frozenset(
    "what why how when where which who whom whose is are was were do does did can could would should "
    "will".split()
)
_CLOSED = tuple(".?!)\"'`”’]*|}>")


def meta_talk(text: str) -> str | None:
    return "meta_talk" if _META.search(text) else None


def unfinished(text: str) -> str | None:
    """`unfinished` when the text stops mid-sentence (a rewrite ends as a question or a request)."""
    stripped = text.rstrip()
    return "unfinished" if stripped and not stripped.endswith(_CLOSED) else None


def answer_text(text: str) -> str | None:
    """`answer_text` when a question is followed by statements: the model answered its rewrite.
    A statement before the question is allowed (complicate-input rewrites give data first); a
    question-word sentence without a question mark counts as a statement ("When X, their Y...")."""
    sentences = [s.strip() for s in _SENTENCE.findall(" ".join(text.split())) if s.strip()]
    asked = False
    for sentence in sentences:
        if sentence.endswith("?"):
            asked = True
        elif asked and not _asks(sentence) and ":" not in sentence:
            return "answer_text"
    if sentences and not asked and (words(sentences[0]) or [""])[0] in _QUESTION_START:
        return "not_a_request"  # a question word opening a statement: nothing is asked at all
    return None


def _asks(sentence: str) -> bool:
    """A follow-up request ("Explain why.", "Consider both cases.") or data (numbers, a table, code),
    not an answer."""
    first = (words(sentence) or [""])[0]
    data = not sentence[0].isalpha() or any(ch.isdigit() or ch in "|`{" for ch in sentence)
    return first in REQUEST_WORDS or data


def subject_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOP_WORDS and w not in GENERIC_WORDS and not w.isdigit()}


def adds_nothing(candidate: str, parent: str, mutation: str, least: int = 2) -> str | None:
    """`no_new_information` when an in-depth rewrite brings fewer than `least` subject words its
    parent lacks: a paraphrase ("How can high blood pressure affect the body?" -> "What can high
    blood pressure do to the body?") is not a harder instruction."""
    if mutation == "breadth":
        return None
    return "no_new_information" if len(subject_words(candidate) - subject_words(parent)) < least else None


def lost_subject(candidate: str, parent: str, mutation: str) -> str | None:
    """`lost_subject` when an in-depth rewrite keeps under half of its parent's subject words."""
    if mutation == "breadth":
        return None
    subject = subject_words(parent)
    if not subject:
        return None
    kept = subject & subject_words(candidate) | {w for w in subject if w.rstrip("s") in candidate.lower()}
    return "lost_subject" if len(kept) < len(subject) / 2 else None
