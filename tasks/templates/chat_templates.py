"""A model's chat template as plain, serializable data: the Jinja text, the special tokens it reads
(`bos_token`, `eos_token`, ...) and the vocabulary's control tokens. Magpie (tasks/magpie.py)
derives its pre-query prompts from it, so it must be renderable without model weights, and it is a
task input, so a changed template changes the cache key.

Rendering goes through transformers' own renderer (`render_jinja_template`, what
`apply_chat_template` calls), so a template renders here exactly as it does for the model. The
helpers below read a template's behaviour by rendering marker messages: where a system prompt can
go, what comes before and after a message, which system prompt it writes on its own.

Where the template comes from is never guessed (`chat_template_for`): `--chat-template`; the
tokenizer of a local backend; what a server publishes (tasks/backends/server_template.py); the
tokenizer of the served model's name or path when this machine holds it (a directory, or the
Hugging Face cache, offline, tokenizer files only); otherwise one error line naming
`--chat-template`. `origin` says which, and goes into every row and the dataset card.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from pydantic import BaseModel, ConfigDict

from tasks.backends import Message
from tasks.backends.base import ServedTemplate

# Plain words: templates `trim` message content, which would eat control characters.
MARKER = "MagpieUserText4f1c"
PROBE = "MagpieSystemProbe7d3a"


class ChatTemplate(BaseModel):
    """Everything needed to render a conversation the way a model expects it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    special_tokens: dict[str, str] = {}
    control_tokens: tuple[str, ...] = ()
    origin: str = ""  # where the template was found: provenance, shown in rows and the card

    @property
    def name(self) -> str:
        """A short, stable identity for provenance: `chat_template@<hash of the text>`."""
        return "chat_template@" + hashlib.sha256(self.source.encode()).hexdigest()[:12]

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token") or None

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token") or None

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        """The conversation as the model sees it; a template that rejects it raises TemplateError."""
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=self.source,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )
        return rendered[0]


# Spellings of control tokens in template text, for a template known without its tokenizer:
# <|eot_id|>, <start_of_turn>, [INST], </s>.
_CONTROL = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?[a-z_]{1,30}>|\[/?[A-Z_]{2,20}\]")


def control_tokens_in(source: str) -> tuple[str, ...]:
    """The control tokens a template's text writes, for templates known without a tokenizer."""
    return tuple(sorted(set(_CONTROL.findall(source))))


def from_tokenizer(tokenizer: Any, override: str | None = None, origin: str = "") -> ChatTemplate:
    """The chat template of a Hugging Face tokenizer (or `override`, a Jinja text, instead)."""
    source = override or _tokenizer_template(tokenizer)
    specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    name = getattr(tokenizer, "name_or_path", "") or "a tokenizer"
    return ChatTemplate(
        source=source,
        special_tokens=specials,
        control_tokens=tuple(sorted(tokenizer.added_tokens_encoder)),
        origin=origin or ("--chat-template" if override else f"tokenizer of {name}"),
    )


def _tokenizer_template(tokenizer: Any) -> str:
    try:
        return tokenizer.get_chat_template()
    except ValueError:
        name = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
        raise ValueError(
            f"{name} has no chat template, so Magpie cannot derive a pre-query prompt from it. "
            "Pass --chat-template with a Jinja chat template (text or a .jinja file) for this model."
        ) from None


def read_override(chat_template: str | None) -> str | None:
    """A user-given chat template: Jinja text, or the path of a file that holds it."""
    if not chat_template or "{" in chat_template:
        return chat_template or None
    path = Path(chat_template).expanduser()
    if not path.is_file():
        raise ValueError(
            f"--chat-template {chat_template!r} is neither Jinja text nor an existing file. "
            "Pass the template text or the path of a .jinja file."
        )
    return path.read_text(encoding="utf-8")


def load_tokenizer(model: str) -> Any:
    """Only the tokenizer of a model id (the embedded model, a directory or a Hub id): no weights."""
    from transformers import AutoTokenizer

    from tasks.backends.transformers_backend import hub_options, resolve_model

    source = resolve_model(model)
    try:
        return AutoTokenizer.from_pretrained(source, **hub_options(source, model))
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot load the tokenizer of {model!r}: {err}") from None


def local_tokenizer(name: str) -> tuple[Any, str] | None:
    """(tokenizer, where) of a served model's name or path when this machine holds its tokenizer:
    a local directory, or a Hub id in the Hugging Face cache. Offline, tokenizer files only."""
    from huggingface_hub import try_to_load_from_cache
    from transformers import AutoTokenizer

    path = Path(name).expanduser()
    if path.is_dir():
        source, where, options = str(path), f"tokenizer of the local directory {name}", {}
    else:
        try:
            cached = try_to_load_from_cache(name, "tokenizer_config.json")
        except ValueError:  # not a repo id (a URL, an alias with spaces...)
            return None
        if not isinstance(cached, str):
            return None
        source, where, options = name, f"tokenizer of {name} (Hugging Face cache)", {"local_files_only": True}
    try:
        return AutoTokenizer.from_pretrained(source, **options), where
    except (OSError, ValueError):
        return None


def from_served(served: ServedTemplate, override: str | None, model: str) -> ChatTemplate:
    """The template of a backend without a tokenizer: `override`, else the one it publishes, else
    its model's tokenizer held on this machine; else a ValueError saying what was tried."""
    found = next(filter(None, map(local_tokenizer, served.model_names)), None)
    if found and not (override or served.source):
        return from_tokenizer(found[0], origin=found[1])
    source = override or served.source
    if not source:
        names = ", ".join(map(repr, served.model_names)) or repr(model)
        raise ValueError(
            f"No chat template for {model!r}: the server publishes none ({'; '.join(served.asked)}) "
            f"and no tokenizer of {names} is on this machine (a directory or the Hugging Face cache). "
            "Pass --chat-template with the model's Jinja chat template (text or a .jinja file)."
        )
    origin = "--chat-template" if override else served.where
    if found:  # the same model's tokenizer knows its special and control tokens
        return from_tokenizer(found[0], source, origin)
    return ChatTemplate(
        source=source,
        special_tokens=served.special_tokens,
        control_tokens=control_tokens_in(source),
        origin=origin,
    )


def chat_template_for(backend: Any, override: str | None = None) -> ChatTemplate:
    """The template a loaded backend renders with: its tokenizer's, or, for a backend without one
    (a server, the fake), found as `from_served` says. Never a guess."""
    model = str(getattr(backend, "model_id", None) or getattr(backend, "model", ""))
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is not None:
        text = read_override(override)
        return from_tokenizer(tokenizer, text, "" if text else f"tokenizer of {model}")
    return from_served(backend.served_template(), read_override(override), model)


def resolve(template: Any, override: str | None = None) -> ChatTemplate:
    """A ChatTemplate from a ChatTemplate, a Hugging Face tokenizer, or a model id."""
    if isinstance(template, ChatTemplate):
        return template
    if isinstance(template, str):
        origin = "" if override else f"tokenizer of {template}"
        return from_tokenizer(load_tokenizer(template), read_override(override), origin)
    return from_tokenizer(template, read_override(override))


def fit_system(
    template: ChatTemplate, messages: list[Message], system_prompt: str | None
) -> tuple[list[Message], bool]:
    """`messages` with the system prompt where the template takes it: a system message, or the
    head of the first user message for templates that reject a system role (Gemma, Mistral v0.1)
    or silently drop it. Returns (messages, merged)."""
    if not system_prompt:
        return list(messages), False
    with_system = [{"role": "system", "content": system_prompt}, *messages]
    try:
        if system_prompt.strip() in template.render(with_system):
            return with_system, False
    except TemplateError:
        pass
    first = messages[0]
    merged = {**first, "content": f"{system_prompt}\n\n{first['content']}"}
    return [merged, *messages[1:]], True


def split_at_marker(
    template: ChatTemplate, messages: list[Message], system_prompt: str | None, marker: str = MARKER
) -> tuple[str, str, bool]:
    """(text before `marker`, text after it, system merged) of the rendered conversation."""
    fitted, merged = fit_system(template, messages, system_prompt)
    try:
        text = template.render(fitted)
    except TemplateError as err:
        raise ValueError(
            f"The chat template rejects a {[m['role'] for m in fitted]} conversation: {err}"
        ) from None
    if text.count(marker) != 1:
        raise ValueError(
            "The chat template does not write a user message verbatim, so no pre-query prompt can be "
            "cut from it. Pass --chat-template with a template that does."
        )
    before, after = text.split(marker)
    return before, after, merged


def leading_token(text: str, control_tokens: tuple[str, ...]) -> str | None:
    """The longest control token `text` starts with (after whitespace), else its first line."""
    text = text.lstrip()
    for token in sorted(control_tokens, key=len, reverse=True):
        if token and text.startswith(token):
            return token
    return text.split("\n", 1)[0].strip() or None


def template_system_prompt(template: ChatTemplate) -> str | None:
    """The system prompt the template writes by itself when a conversation has none: the text of
    the no-system render that stands where a probe system prompt stands in the other."""
    user = [{"role": "user", "content": MARKER}]
    bare = split_at_marker(template, user, None)[0]
    probed, _, merged = split_at_marker(template, user, PROBE)
    if merged:
        return None
    head, tail = probed.split(PROBE)
    if len(bare) > len(head) + len(tail) and bare.startswith(head) and bare.endswith(tail):
        return bare[len(head) : len(bare) - len(tail)]
    return None
