"""One way to render prompts: Jinja templates, strict and sandboxed.

A template is either a file under `prompts/` or the template text itself ("inline"). The rule, in
`is_file`: a value that ends in `.jinja` and holds no Jinja markup and no line break names a file
under prompts/ (it must exist); anything else is inline text. Both render in the same environment:
missing variables raise (`StrictUndefined`), and the sandbox stops a template, user-supplied or not,
from reaching Python internals.
"""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateNotFound, meta
from jinja2.exceptions import TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(PROMPTS_DIR),
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


def render(name: str, **variables: object) -> str:
    """Render `prompts/<name>` with `variables`; every variable it uses must be given."""
    try:
        template = environment().get_template(name)
    except TemplateNotFound:
        raise ValueError(
            f"No prompt template {name!r} in {PROMPTS_DIR}. A value ending in .jinja names a file "
            "there; to use your own text as the template, pass the text itself."
        ) from None
    return _fill(template, f"Prompt template {name!r}", variables)


def render_string(text: str, **variables: object) -> str:
    """Render the template text `text` (an inline template) exactly as `render` renders a file."""
    try:
        template = environment().from_string(text)
    except TemplateSyntaxError as err:
        raise ValueError(f"Inline prompt template {text!r} is not valid Jinja: {err.message}.") from None
    return _fill(template, f"Inline prompt template {text!r}", variables)


def render_template(template: str, **variables: object) -> str:
    """Render a prompts/ file name or an inline template text (see `is_file` for the rule)."""
    if is_file(template):
        return render(template, **variables)
    return render_string(template, **variables)


def source(name: str) -> str:
    """The text of a template (a file name or inline text) and of every template it extends or
    includes: what a cache key must hash, since editing any of it changes the prompt."""
    env = environment()
    if is_file(name):
        try:
            text, _, _ = env.loader.get_source(env, name)
        except TemplateNotFound:
            raise ValueError(f"No prompt template {name!r} in {PROMPTS_DIR}.") from None
    else:
        text = name
    parents = meta.find_referenced_templates(env.parse(text))
    return text + "".join(source(parent) for parent in sorted(p for p in parents if p))
