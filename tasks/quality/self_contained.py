"""`needs_context`: an instruction that means nothing without the passage it was written from.

Asked to write questions about a passage, small models write "How does it work?", "What is the
process?", "What's the purpose of the vaccine?" or "How did this network of trade routes spread
Buddhism?": questions about *the passage's* subject that never name it. A dataset row keeps the
instruction without the passage, so such a row teaches a model to answer a question nobody can
understand. The checks below are lexical and aim at precision (rather let a vague question through
than drop a self-contained one); each names one way a question points outside itself:

- it refers to the source ("the text", "the passage", "mentioned above"), to an input it does
  not carry ("Compare the books in the list."), or to an earlier turn of a conversation that a
  single instruction never had ("You're referring to the Earth's rotation...", "as you mentioned");
- its opening clause uses a demonstrative ("this treaty", "these cells", "those routes"), or a
  later clause speaks of "this process" when no process was named before it;
- its opening clause's subject is a pronoun ("What type of vaccine is it?", "How does it work?"),
  unless the pronoun is the dummy "it" of "Is it possible to...", "How long does it take to...";
- it names no subject at all (only generic words: "What are the benefits?", "How do you sync?");
- every thing it names is a definite description ("the starter", "the vaccine and the real
  pathogen", "the 1,050 euros"): the passage's own things, never introduced in the question.
The labelled instructions in tests/fixtures/ hold these rules to no mistakes on real generations.
"""

from __future__ import annotations

import re

# Function words: never the subject of a question.
STOP_WORDS = frozenset(
    "a an the this that these those some any each every no other another such own same "
    "i me my we us our you your he him his she her it its they them their one ones someone something "
    "what why how when where which who whom whose whether if than then so as "
    "is are was were be been being am do does did done doing has have had having "
    "can could will would shall should may might must "
    "of in on at to for from by with about into onto over under between among through during "
    "after before against without within across along around behind beyond toward towards upon "
    "and or but nor not also too very more most less least much many few just only even still "
    "s t d ll re ve m there here up out off down".split()
)
# Content words that name nothing by themselves: "the process", "the benefits", "how does it work".
GENERIC_WORDS = frozenset(
    "process processes way ways method methods purpose purposes benefit benefits advantage advantages "
    "disadvantage disadvantages difference differences type types kind kinds main key idea ideas role "
    "roles effect effects impact impacts result results thing things work works working used use uses "
    "using mean means meaning important importance significance significant example examples step "
    "steps part parts reason reasons function functions called happen happens happened make makes made "
    "help helps get gets give gives take takes go goes come comes need needs know like "
    "explain describe tell list give define summarize discuss understand other different new old "
    "best better good bad common possible real specific certain particular whole overall general "
    "first second last next final long".split()
)
# Things everyone knows "the" of: "What is the atmosphere made of?" needs no passage.
_KNOWN = frozenset(
    "sun moon earth world universe sky atmosphere weather climate ocean sea internet web economy "
    "environment government body brain heart blood skin law police future past present".split()
)
_DEFINITE = frozenset({"the", "its", "their", "his", "her", "our", "your", "my"})
_INDEFINITE = frozenset({"a", "an", "some", "any", "each", "every", "all", "both", "no"})
_PREPOSITIONS = frozenset(
    "of in on at to for from by with about into onto over under between among through during after "
    "before against without within across along around behind beyond toward towards upon than as like".split()
)
_COPULA = frozenset(
    "is are was were be been being has have had can could will would should may might must "
    "do does did".split()
)
_PRONOUNS = frozenset("i you we he she it they".split())

_SOURCE = re.compile(
    r"\b(?:the|this|that|above|following|given)\s+(?:(?:original|above|given|following|provided)\s+)?"
    r"(?:text|passage|article|paragraph|excerpt|document|"
    r"author|context(?!\s+of))\b|\b(?:mentioned|described|discussed|stated|given|shown)\s+"
    r"(?:above|below|here|earlier|in\s+the)\b|\baccording\s+to\s+the\b",
    re.IGNORECASE,
)
# "You're referring to...", "as you mentioned": a reply to a conversation the row does not have
_EARLIER_TURN = re.compile(
    r"\byou(?:'re|\s+are|\s+were)\s+(?:referring|talking)\b|\byou(?:'ve|\s+have)?\s+"
    r"(?:mentioned|said|described|asked|noted)\b|\bas\s+(?:we|you)\s+(?:discussed|saw|said|mentioned)\b|"
    r"\byour\s+(?:previous|earlier|last)\s+(?:question|answer|message|point)\b",
    re.IGNORECASE,
)
# "Compare the books in the list.": an input the instruction points at but does not carry (one that
# carries it gives it after a colon or on lines of its own).
_INPUT_REFERENCE = re.compile(
    r"\b(?:the|this|that|given|following)\s+(?:\w+\s+)?(?:list|paragraph|sentence|snippet|email|essay|"
    r"poem|review)(?=\s*(?:[.?!,;]|$)|\s+(?:in|to|and|from|into|below|above|with|by|as|so|more|is|are|has|contains)\b)",
    re.IGNORECASE,
)
_DEMONSTRATIVE = re.compile(r"\b(?:this|these|those)\b", re.IGNORECASE)
# "in this process": a demonstrative after a preposition or verb, before its noun; after an
# auxiliary ("how did this impact...") it is a pronoun for the clause before.
_DEMONSTRATIVE_NOUN = re.compile(r"\b(\w+)\s+(?:this|these|those)\s+(\w+)", re.IGNORECASE)
_DEICTIC_TIME = frozenset("time times year week month day morning evening night weekend moment way".split())
_AUXILIARIES = frozenset("do does did is are was were has have had can could will would should".split())
_TOKEN = re.compile(r"\"[^\"]+\"|“[^”]+”|'[^' ]+(?: [^' ]+)*'(?!\w)|\w+(?:[-']\w+)*")
# The opening clause ends at the first comma, semicolon, sentence end or coordinated second
# question: a pronoun or "this" after it may point back inside the instruction itself.
_CLAUSE_END = re.compile(
    r"[,;:?.!]|\s(?:and|or|but)\s+(?:what|why|how|when|where|which|who|is|are|do|does)\b", re.I
)
_INVERTED_PRONOUN = re.compile(
    r"(?:^|\b(?:is|are|was|were|does|do|did|can|could|will|would|should|has|have|had)\s+)"
    r"(it|they|he|she)\b(.*)$",
    re.IGNORECASE,
)
# After the pronoun, these make it the dummy subject of an extraposed clause ("is it safe to...").
_DUMMY_IT = re.compile(
    r"^\s*(?:\w+\s+){0,3}?(?:to|that|whether|if|for|take|takes|took|cost|costs|mean|matter)\b", re.IGNORECASE
)


def _tokens(text: str) -> list[str]:
    """Words (possessive and contracted endings cut: "Earth's" -> "Earth"), numbers, quoted terms."""
    return [re.sub(r"'(?:s|t|re|ve|ll|d|m)$", "", t, flags=re.I) for t in _TOKEN.findall(text)]


def _kind(token: str, first: bool) -> str:
    """ "name" (a quoted term, a number, a capitalized word inside the sentence), "word" (a content
    word), "generic" (a content word that names nothing alone) or "function"."""
    low = token.lower()
    if token[0] in "\"“'" or any(ch.isdigit() for ch in token):
        return "name"
    if low in STOP_WORDS or not low.replace("-", "").isalpha():
        return "function"
    if not first and token[0].isupper():
        return "name"
    return "generic" if low in GENERIC_WORDS else "word"


def noun_phrases(text: str) -> list[tuple[str, list[str]]]:
    """The question's noun phrases as (how it opens, its content words), read without a tagger.

    A phrase is judged by the word that opens it: after a preposition, a copula, an auxiliary or
    an indefinite article it is "bare", standing on its own ("of sourdough", "is compound
    interest", "a git clone"); after "the", "its", "their"... it is "definite", a reference to
    something known; a name (a capitalized word, a number, a quoted term) is a "name". A word right
    after a subject pronoun or "to" is a verb ("do you sync", "to save") and opens nothing."""
    phrases: list[tuple[str, list[str]]] = []
    state = "bare"  # how the next content word opens a phrase, or "verb", or "tail" (same phrase)
    for i, token in enumerate(_tokens(text)):
        low, kind = token.lower(), _kind(token, i == 0)
        if kind == "name":
            phrases.append(("name", [token]))
            state = "tail"
        elif kind == "function":
            if low in _DEFINITE or low in ("this", "these", "those"):
                state = "definite"
            elif low in _PRONOUNS or low in ("to", "and", "or"):
                state = "verb"
            elif low in _INDEFINITE or low in _PREPOSITIONS or low in _COPULA or low in ("how", "why"):
                state = "bare"
        elif state == "verb":
            state = "bare"  # the verb itself; its object opens a phrase
        elif kind == "word" and state == "tail" and phrases:
            phrases[-1][1].append(low)
        elif kind == "word":
            phrases.append((state if state != "tail" else "bare", [low]))
            state = "tail"
        # A generic word ("the main", "a new") leaves the opening as it was.
    return phrases


def _opening_clause(text: str) -> str:
    return _CLAUSE_END.split(text.strip(), maxsplit=1)[0].strip()


def _main_clause_pronoun(text: str) -> bool:
    match = _INVERTED_PRONOUN.search(_opening_clause(text))
    return bool(match) and not _DUMMY_IT.match(match.group(2))


def needs_context(text: str) -> str | None:
    """`needs_context` when `text` cannot be understood without its source passage, else None."""
    if _SOURCE.search(text) or _EARLIER_TURN.search(text) or _DEMONSTRATIVE.search(_opening_clause(text)):
        return "needs_context"
    for match in _DEMONSTRATIVE_NOUN.finditer(text):  # "this process" with no process named before
        before, noun = match.group(1).lower(), match.group(2).lower()
        if before in _AUXILIARIES or noun in _DEICTIC_TIME:
            continue
        if noun.rstrip("s") not in text[: match.start(2)].lower():
            return "needs_context"
    if ":" not in text and "\n" not in text and _INPUT_REFERENCE.search(text):
        return "needs_context"
    if re.search(r"\bthe\s+\d", text, re.IGNORECASE):  # "the 1,050 euros": a figure from the passage
        return "needs_context"
    if _main_clause_pronoun(text):
        return "needs_context"
    phrases = noun_phrases(text)
    if not phrases:  # "What are the benefits?", "How do you sync?": no subject at all
        return "needs_context"
    if len(phrases) <= 3 and all(
        opening == "definite" and len(nouns) == 1 and nouns[0] not in _KNOWN for opening, nouns in phrases
    ):  # "the vaccine", "the starter", "the other strand": the passage's things, never introduced
        return "needs_context"
    return None
