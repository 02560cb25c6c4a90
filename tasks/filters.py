"""Pure checks that turn a bad generation into a named reason (or None when the text is fine).

What a 135M model gets wrong, and each check's name: list numbering left on (stripped by the
parsers), duplicates (`duplicate`), an echo of the prompt's own words (`echo_of_prompt`),
degeneration into symbols or one repeated token (`degenerate`), nothing at all (`empty`), and,
from the Evol-Instruct paper's elimination rules, an evolution that adds nothing
(`near_identical`, `no_new_information`) and a response that is a short apology (`refusal`).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter

_WORD = re.compile(r"\w+", re.UNICODE)
_REFUSAL = re.compile(
    r"\b(sorry|i apologi[sz]e|i can(?:no|')t|i am (?:not able|unable)|i'm (?:not able|unable)|"
    r"as an ai\b|i do not have (?:access|the ability)|i don't have (?:access|the ability))",
    re.IGNORECASE,
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """Lowercased words joined by single spaces: the key for exact-duplicate checks."""
    return " ".join(words(text))


def empty(text: str) -> str | None:
    return "empty" if not any(ch.isalnum() for ch in text) else None


def degenerate(text: str) -> str | None:
    """Emoji/symbol soup, or text dominated by one repeated token, line or phrase."""
    chars = [ch for ch in text if not ch.isspace()]
    if chars:
        letters = sum(1 for ch in chars if unicodedata.category(ch)[0] in "LN")
        if letters / len(chars) < 0.6:
            return "degenerate"
    tokens = words(text)
    if len(tokens) >= 8 and Counter(tokens).most_common(1)[0][1] / len(tokens) > 0.4:
        return "degenerate"
    if re.search(r"(\b\w+\b)(\W+\1\b){4,}", text, re.IGNORECASE):  # same word 5 times in a row
        return "degenerate"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 4 and Counter(lines).most_common(1)[0][1] / len(lines) >= 0.5:
        return "degenerate"
    raw = text.encode()
    if len(raw) >= 200 and len(zlib.compress(raw)) / len(raw) < 0.2:  # a looping phrase
        return "degenerate"
    return None


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def echoes(text: str, boilerplate: str, markers: tuple[str, ...] = (), n: int = 5) -> str | None:
    """`echo_of_prompt` when `text` repeats the prompt's own instructions: a marker string, or any
    run of `n` words from the prompt's fixed text (the prompt minus the row's own data)."""
    lowered = text.lower()
    if any(marker.lower() in lowered for marker in markers):
        return "echo_of_prompt"
    if ngrams(words(text), n) & ngrams(words(boilerplate), n):
        return "echo_of_prompt"
    return None


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts, over lowercased words (the Self-Instruct similarity)."""
    ta, tb = words(a), words(b)
    if not ta or not tb:
        return 0.0
    lcs = lcs_length(ta, tb)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(ta), lcs / len(tb)
    return 2 * precision * recall / (precision + recall)


def no_gain(candidate: str, parent: str, threshold: float = 0.9) -> str | None:
    """Evol-Instruct's first elimination rule, heuristically: the evolution is the parent again
    (`near_identical`) or only a subset of its words (`no_new_information`)."""
    if normalize(candidate) == normalize(parent) or rouge_l(candidate, parent) >= threshold:
        return "near_identical"
    if set(words(candidate)) <= set(words(parent)):
        return "no_new_information"
    return None


def refusal(response: str, max_words: int = 80) -> str | None:
    """Evol-Instruct's second elimination rule: a short response that apologises or declines."""
    if len(words(response)) < max_words and _REFUSAL.search(response):
        return "refusal"
    return None


_REQUEST_START = frozenset(
    "what why how when where which who whom whose can could would should is are do does did will "
    "explain describe write list summarize summarise compare contrast give provide tell create "
    "calculate compute discuss outline identify define analyze analyse evaluate suggest propose "
    "design imagine translate rewrite generate find show name classify convert draft plan help "
    "please given using based suppose assume consider estimate predict prove solve recommend".split()
)
_ASSISTANT_VOICE = re.compile(
    r"\b(i'm here to|i am here to|(?:i'd|i would|i'll|i will) be (?:happy|glad) to|"
    r"happy to (?:help|assist)|i'm ready to|how can i (?:help|assist))",
    re.IGNORECASE,
)


def not_a_request(text: str) -> str | None:
    """`not_a_request` unless some line asks something (a question mark, or a line opening with a
    question word or an imperative); `assistant_voice` when it speaks as the assistant. This is
    how an evolution that answered its prompt instead of rewriting it is caught."""
    if _ASSISTANT_VOICE.search(text):
        return "assistant_voice"
    if "?" in text:
        return None
    for line in text.splitlines():
        first = [w for w in words(line) if not w.isdigit()][:1]  # skip list numbering
        if first and first[0] in _REQUEST_START:
            return None
    return "not_a_request"


def first_reason(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r), None)
