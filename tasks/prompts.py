"""One way to render prompts: Jinja files from `prompts/`, strict and sandboxed.

Missing variables raise (`StrictUndefined`), and templates render in a sandbox, so a user-supplied
template cannot reach Python internals.
"""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, meta
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(PROMPTS_DIR),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render(name: str, **variables: object) -> str:
    """Render `prompts/<name>` with `variables`; every variable it uses must be given."""
    try:
        template = environment().get_template(name)
    except TemplateNotFound:
        raise ValueError(f"No prompt template {name!r} in {PROMPTS_DIR}.") from None
    try:
        return template.render(**variables).strip()
    except UndefinedError as err:
        raise ValueError(
            f"Prompt template {name!r} needs a variable that was not given ({err.message}); "
            f"given: {sorted(variables)}."
        ) from None


def source(name: str) -> str:
    """The text of a template and of every template it extends or includes (for cache keys)."""
    env = environment()
    text, _, _ = env.loader.get_source(env, name)
    parents = meta.find_referenced_templates(env.parse(text))
    return text + "".join(source(parent) for parent in sorted(p for p in parents if p))
