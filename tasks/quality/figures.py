"""A grounded answer's figures against its passage.

The plainest sign that an answer contradicts the passage it was given is a figure the passage never
states: asked about a passage on the 1908 London Olympics, the 135M model answers that the Games
"took place in London, England, from 1936 to 1938"; given "completed under Hadrian around 126 AD",
that the Pantheon "was built by Emperor Hadrian in 121 AD". A grounded answer's years, counts and
measures should come from its passage (or its question), so one that states a figure of two or more
digits that neither does, about a passage that gives figures of its own, is drawn again and, failing
that, dropped as `unsupported_figure`. Single digits are left alone (steps, kinds, "2 types"), and so
are list numbering, decades ("the 1640s") and roundings of the passage's own figures ("42
kilometres" for 42.195). What this cannot see is a wrong statement without a figure in it.
"""

from __future__ import annotations

import re

# a number standing alone (not inside an identifier, a version string or a decade: "python3.8",
# "1640s"), thousands separators allowed
_NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?![\w]|[.,]\d)")
_LIST_MARKER = re.compile(r"^\s*\d+[.)](?=\s)", re.MULTILINE)
_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


def figures(text: str, spelled: bool = True) -> set[float]:
    """The numbers `text` states in digits, list numbering aside, and (`spelled`) as number words
    ("twelve years")."""
    text = _LIST_MARKER.sub(" ", text)
    found = {float(n.replace(",", "")) for n in _NUMBER.findall(text)}
    if spelled:
        found |= {float(_NUMBER_WORDS[w.lower()]) for w in _WORD_NUMBER.findall(text)}
    return found


def _notable(value: float) -> bool:
    """Two or more digits, or a fraction: a year, a count or a measure, not "2 types"."""
    return value >= 10 or value != int(value)


def unsupported_figure(answer: str, source: str) -> str | None:
    """`unsupported_figure` when `answer` states in digits a notable figure that `source` (the
    passage and the question) does not, in digits or words, while `source` states notable figures
    of its own; a figure that rounds one of the source's counts as stated."""
    stated = {value for value in figures(source) if _notable(value)}
    if not stated:
        return None
    allowed = stated | {float(round(v)) for v in stated} | {float(int(v)) for v in stated}
    extra = {value for value in figures(answer, spelled=False) if _notable(value)} - allowed
    return "unsupported_figure" if extra else None
