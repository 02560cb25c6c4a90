"""Pure checks that turn a bad generation into a named reason (or None when the text is fine).

What a 135M model gets wrong, and each check's name: list numbering left on (stripped by the
parsers), duplicates (`duplicate`), an echo of the prompt's own words (`echo_of_prompt`),
degeneration into symbols, one repeated token or a looping phrase (`degenerate`), nothing at all
(`empty`), and, from the Evol-Instruct paper's elimination rules, an evolution that adds nothing
(`near_identical`, `no_new_information`) and a response that is a short apology (`refusal`).
"""

from __future__ import annotations

import re
import string
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
    if repeats_phrase(tokens):  # one too short for the compression to see
        return "degenerate"
    return None


def repeats_phrase(tokens: list[str], shortest: int = 3, times: int = 3) -> bool:
    """A phrase of `shortest` words or more, two of them with letters, said `times` times in a row:
    "A branch and why they are so convenient: A branch and why they are so convenient: A branch and
    ..." (kept in a flow run's rows, 21 words, under what the compression ratio above looks at), or a
    sentence a longer answer loops on. Not "(1 + 1/2) * (1 + 1/2 + 1/4)": numbers alone repeat in
    arithmetic."""
    for n in range(shortest, len(tokens) // times + 1):
        for i in range(len(tokens) - times * n + 1):
            if tokens[i] != tokens[i + n]:  # most starts fail here, before any slice is made
                continue
            phrase = tokens[i : i + n]
            if all(phrase == tokens[i + j * n : i + (j + 1) * n] for j in range(1, times)) and (
                sum(any(ch.isalpha() for ch in token) for token in phrase) >= 2
            ):
                return True
    return False


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
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyro 2004): one bit per token of the shorter list, so each token of the longer
    list costs a few big-integer operations instead of a Python loop over the shorter one."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    # subtle: each zero bit left in v is one matched position of the LCS.
    return len(b) - bin(v).count("1")


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts, over lowercased words (the Self-Instruct similarity)."""
    return rouge_l_tokens(words(a), words(b))


def rouge_l_tokens(ta: list[str], tb: list[str]) -> float:
    """`rouge_l` on already tokenized texts (`words`), for callers that tokenize once."""
    if not ta or not tb:
        return 0.0
    lcs = lcs_length(ta, tb)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(ta), lcs / len(tb)
    return 2 * precision * recall / (precision + recall)


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"A ROUGE-L threshold must be in (0, 1], got {threshold}.")


def no_gain(candidate: str, parent: str, threshold: float = 0.9) -> str | None:
    """Evol-Instruct's first elimination rule, heuristically: the evolution is the parent again
    (`near_identical`) or only a subset of its words (`no_new_information`)."""
    if normalize(candidate) == normalize(parent) or rouge_l(candidate, parent) >= threshold:
        return "near_identical"
    if set(words(candidate)) <= set(words(parent)):
        return "no_new_information"
    return None


_DECLINE = re.compile(
    r"\bas an? (?:new )?(?:ai|chatbot|language model|smollm)\b|\bnot equipped to\b|\bi'?m (?:just|only) a "
    r"chatbot\b|\bi (?:don't|do not|cannot|can't) (?:have the "
    r"(?:ability|capability)|have access|access|browse)|\bi'?m not (?:a chatbot|able)|\bi am not able\b|"
    r"\bi'?m unable\b|\bi am unable\b",
    re.IGNORECASE,
)


def refusal(response: str, max_words: int = 80, opening: int = 40) -> str | None:
    """Evol-Instruct's second elimination rule: a short response that apologises or declines, or
    a long one that opens by declining ("I'm sorry, but as a chatbot, I don't have the ability...")."""
    if len(words(response)) < max_words and _REFUSAL.search(response):
        return "refusal"
    if _DECLINE.search(" ".join(response.split()[:opening])):
        return "refusal"
    return None


REQUEST_WORDS = frozenset(
    "what why how when where which who whom whose can could would should is are do does did will "
    "explain describe write list summarize summarise compare contrast give provide tell create "
    "calculate compute discuss outline identify define analyze analyse evaluate suggest propose "
    "design imagine translate rewrite generate find show name classify convert draft plan help "
    "please given using based suppose assume consider estimate predict prove solve recommend answer include "
    "use keep limit focus mention respond format avoid cite illustrate justify argue".split()
)
_ASSISTANT_VOICE = re.compile(
    r"\b(i'm here to|i am here to|(?:i'd|i would|i'll|i will) be (?:happy|glad) to|"
    r"happy to (?:help|assist)|i'm ready to|how can i (?:help|assist))",
    re.IGNORECASE,
)


_SOURCE_TALK = re.compile(
    r"\b(?:the|this|that)\s+reference(?:\s+text)?\b|\b(?:the|this)\s+passage\b(?!\s+of)|"
    r"\bthe\s+text\s+(?:above|provided|provides|states|says|describes|mentions|explains|suggests|shows|notes|"
    r"indicates|discusses|highlights|is about)\b|"
    r"\baccording to the (?:text|passage|reference)\b|"
    r"\bthe answer to (?:the|this|your) question\s*(?:is\b|about\b|:|[\"'“])|"
    r"(?:^|\n|\s)(?:question|answer|premise)\s*:",  # the prompt's own scaffold, written back
    re.IGNORECASE,
)


def mentions_prompt(response: str) -> str | None:
    """`mentions_prompt` when a generation talks about the material or the prompt it was given
    ("According to the reference text...", "The answer to the question is:", "The user's question:
    ...", "Question: ... Answer:"): the row keeps the text without them."""
    return "mentions_prompt" if _SOURCE_TALK.search(response) else None


_ANNOUNCED = re.compile(r"\banswer(?:\s+is)?\s*:\s*$", re.IGNORECASE)  # and then nothing


def non_answer(response: str, instruction: str | None, max_words: int = 30) -> str | None:
    """`non_answer` when a response only repeats its instruction ("The tides occur on land versus at
    sea."), ends by announcing an answer it never gives ("Why do we use Git? The answer is:") or,
    short, only offers help ("I'm ready to help. What's your next question?")."""
    if _ANNOUNCED.search(response):
        return "non_answer"
    if instruction and (
        normalize(response) in normalize(instruction) or rouge_l(response, instruction) >= 0.8
    ):
        return "non_answer"
    if len(words(response)) < max_words and _ASSISTANT_VOICE.search(response):
        return "non_answer"
    return None


def assistant_voice(text: str) -> str | None:
    """`assistant_voice` when the text speaks as the assistant ("I'm here to help...")."""
    return "assistant_voice" if _ASSISTANT_VOICE.search(text) else None


def not_a_request(text: str) -> str | None:
    """`not_a_request` unless some line asks something (a question mark, or a line opening with a
    question word or an imperative); `assistant_voice` when it speaks as the assistant. This is
    how an evolution that answered its prompt instead of rewriting it is caught."""
    if assistant_voice(text):
        return "assistant_voice"
    if "?" in text:
        return None
    for line in text.splitlines():
        first = [w for w in words(line) if not w.isdigit()][:1]  # skip list numbering
        if first and first[0] in REQUEST_WORDS:
            return None
    return "not_a_request"


def first_reason(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r), None)


# Self-Instruct's filter for instructions a text-only model cannot carry out (Wang et al., 2022,
# section 2.3, keyword list from the paper's code), matched as whole words.
UNSUPPORTED_KEYWORDS = (
    "image",
    "images",
    "picture",
    "pictures",
    "graph",
    "graphs",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
)
_UNSUPPORTED = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in UNSUPPORTED_KEYWORDS) + r")\b", re.I)


def length_out_of_range(text: str, min_words: int = 4, max_words: int = 150) -> str | None:
    """Self-Instruct's length filter: `too_short` under `min_words` words (the paper drops 3 or
    fewer), `too_long` over `max_words`, counted on whitespace as the paper does."""
    count = len(text.split())
    if count < min_words:
        return "too_short"
    return "too_long" if count > max_words else None


def unsupported_keyword(text: str) -> str | None:
    """`unsupported_keyword` when the instruction asks for images, files, maps, plots, audio..."""
    return "unsupported_keyword" if _UNSUPPORTED.search(text) else None


def starts_with_punctuation(text: str) -> str | None:
    stripped = text.lstrip()
    return "starts_with_punctuation" if stripped and stripped[0] in string.punctuation else None


def non_english(text: str, min_ascii_share: float = 0.9) -> str | None:
    """A heuristic, not a language detector: `non_english` when the text starts with a non-ASCII
    character (the paper's rule) or fewer than `min_ascii_share` of its letters are ASCII."""
    stripped = text.lstrip()
    letters = [ch for ch in stripped if ch.isalpha()]
    if stripped and not stripped[0].isascii():
        return "non_english"
    if letters and sum(ch.isascii() for ch in letters) / len(letters) < min_ascii_share:
        return "non_english"
    return None
