"""One way to render prompts: Jinja templates, strict and sandboxed.

A template is either a file under `prompts/` or the template text itself ("inline"). The rule, in
`is_file`: a value that ends in `.jinja` and holds no Jinja markup and no line break names a file
under prompts/ (it must exist); anything else is inline text. Both render in the same environment:
missing variables raise (`StrictUndefined`), and the sandbox stops a template, user-supplied or not,
from reaching Python internals.

Overrides (`--prompts DIR`, checked by `tasks/templates/prompt_overrides.py`) are template texts that shadow
the shipped files of the same name. Tasks receive them as an input, a plain dict that reaches
thread and Dask workers alike, and render inside `overriding(...)`; every function here then sees
them, including a shipped template that extends an overridden one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from jinja2 import (
    ChoiceLoader,
    DictLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    meta,
)
from jinja2.exceptions import TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"

Overrides = tuple[tuple[str, str], ...]  # (template name, text that replaces it), sorted by name
# subtle: a ContextVar, not a global: each Prefect task thread runs in a copy of the context, so one
# task's overrides never leak into another's, and a Dask worker sees only what its task was given.
_ACTIVE: ContextVar[Overrides] = ContextVar("prompt_overrides", default=())


@contextmanager
def overriding(overrides: Mapping[str, str] | None) -> Iterator[None]:
    """Inside the block, `overrides` (template name -> text) shadow the shipped templates; None
    keeps whatever is active (a task called from another task's body inherits its overrides)."""
    if overrides is None:
        yield
        return
    token = _ACTIVE.set(tuple(sorted(overrides.items())))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def shipped() -> list[str]:
    """The names of every template under prompts/, as `render` takes them."""
    return sorted(p.relative_to(PROMPTS_DIR).as_posix() for p in PROMPTS_DIR.rglob("*.jinja"))


@functools.cache
def environment(overrides: Overrides = ()) -> ImmutableSandboxedEnvironment:
    loader = FileSystemLoader(PROMPTS_DIR)
    return ImmutableSandboxedEnvironment(
        loader=ChoiceLoader([DictLoader(dict(overrides)), loader]) if overrides else loader,
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def is_file(template: str) -> bool:
    """True when `template` names a file under prompts/, False when it is the template text."""
    return template.endswith(".jinja") and not any(s in template for s in ("{{", "{%", "{#", "\n"))


def _fill(template: Template, what: str, variables: dict[str, object]) -> str:
    try:
        return template.render(**variables).strip()
    except UndefinedError as err:
        raise ValueError(
            f"{what} needs a variable that was not given ({err.message}); given: {sorted(variables)}."
        ) from None
    except SecurityError as err:
        raise ValueError(f"{what} is not allowed by the template sandbox: {err}.") from None


def _active() -> ImmutableSandboxedEnvironment:
    return environment(_ACTIVE.get())


def render(name: str, **variables: object) -> str:
    """Render `prompts/<name>` (or its override) with `variables`; every variable it uses must be given."""
    try:
        template = _active().get_template(name)
    except TemplateNotFound:
        raise ValueError(
            f"No prompt template {name!r} in {PROMPTS_DIR}. A value ending in .jinja names a file "
            "there; to use your own text as the template, pass the text itself."
        ) from None
    return _fill(template, f"Prompt template {name!r}", variables)


def render_string(text: str, **variables: object) -> str:
    """Render the template text `text` (an inline template) exactly as `render` renders a file."""
    try:
        template = _active().from_string(text)
    except TemplateSyntaxError as err:
        raise ValueError(f"Inline prompt template {text!r} is not valid Jinja: {err.message}.") from None
    return _fill(template, f"Inline prompt template {text!r}", variables)


def render_template(template: str, **variables: object) -> str:
    """Render a prompts/ file name or an inline template text (see `is_file` for the rule)."""
    if is_file(template):
        return render(template, **variables)
    return render_string(template, **variables)


def source(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """The text of a template (a file name or inline text) and of every template it extends or
    includes: what a cache key must hash, since editing any of it changes the prompt. With
    `overrides` (else the active ones) an overridden template's text replaces the shipped one."""
    with overriding(overrides):
        return _source(_active(), name)


def _source(env: ImmutableSandboxedEnvironment, name: str) -> str:
    if is_file(name):
        try:
            text, _, _ = env.loader.get_source(env, name)
        except TemplateNotFound:
            raise ValueError(f"No prompt template {name!r} in {PROMPTS_DIR}.") from None
    else:
        text = name
    parents = meta.find_referenced_templates(env.parse(text))
    return text + "".join(_source(env, parent) for parent in sorted(p for p in parents if p))


@functools.lru_cache(maxsize=1024)
def _label(name: str, overrides: Overrides) -> str:
    try:
        used, original = _source(environment(overrides), name), _source(environment(), name)
    except ValueError:  # not a template under prompts/ (inline text, a chat template's name)
        return name
    if used == original:
        return name
    return f"{name}@override:{hashlib.sha256(used.encode()).hexdigest()[:12]}"


def label(name: str) -> str:
    """`name` as a row's provenance records it: with `@override:<hash of the text used>` when an
    active override changed it (itself or a template it extends)."""
    return _label(name, _ACTIVE.get()) if _ACTIVE.get() else name
