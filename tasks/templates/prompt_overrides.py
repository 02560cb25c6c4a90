"""`--prompts DIR`: try a prompt change without editing the project (evaluate, then iterate on the
prompt). Every `.jinja` file under DIR replaces the shipped template with the same path under
prompts/ (`respond.jinja`, `evol_instruct/deepening.jinja`, ...); other files are ignored, and a
file identical to the shipped one is no override.

Checked before any model call, each failure one line that names the file and the fix: a name that
matches no shipped template (a typo would otherwise be ignored silently), invalid Jinja, a variable
the technique does not pass (`VARIABLES`), a variable it passes that the template never uses (its
parameter or its row would be ignored), or a template that fails a trial render. The texts then
travel to every task as its `prompt_overrides` input (`tasks/templates/prompts.py`), key the cache through
the templates each task renders, and are recorded in the summary and the dataset card.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, TemplateNotFound, meta

from tasks.templates import prompts

_IN_DEPTH = ("_in_depth", "constraints", "deepening", "concretizing", "reasoning", "complicate_input")
# The variables each technique passes when it renders a shipped template: all an override may use,
# and all it must use (itself or through the template it extends).
VARIABLES: dict[str, frozenset[str]] = {
    "self_instruct.jinja": frozenset({"context", "num_instructions"}),
    "self_instruct/bootstrap.jinja": frozenset({"instructions"}),
    **{f"evol_instruct/{name}.jinja": frozenset({"instruction"}) for name in (*_IN_DEPTH, "breadth")},
    "respond.jinja": frozenset({"instruction"}),
    "respond_grounded.jinja": frozenset({"instruction", "context"}),
    "generate/write_prompt.jinja": frozenset({"seed_instruction"}),
    "magpie/multi_turn_system.jinja": frozenset(),
}
# A value of each variable's type, for the trial render that catches what parsing cannot.
SAMPLES: dict[str, Any] = {
    "context": "Honey bees tell each other where flowers are with a waggle dance.",
    "num_instructions": 3,
    "instruction": "Explain how bees find flowers.",
    "instructions": ["Explain how bees find flowers.", "Write a haiku about rain."],
    "seed_instruction": "how bees find flowers",
}


class PromptsError(ValueError):
    """A `--prompts` directory that cannot be used; the message says what to fix."""


def load_overrides(directory: str | Path | None) -> dict[str, str]:
    """{template name: text} for every template under `directory` that differs from the shipped
    one, all checked; {} for no directory."""
    if directory is None:
        return {}
    root = Path(directory)
    if not root.is_dir():
        raise PromptsError(
            f"--prompts {root} is not a directory. Pass a directory of .jinja files named like "
            "those under prompts/ (copy one there and edit it)."
        )
    files = sorted(p for p in root.rglob("*.jinja") if p.is_file())
    if not files:
        raise PromptsError(f"--prompts {root} holds no .jinja templates. Put the ones to override there.")
    overrides = {}
    for path in files:
        name = path.relative_to(root).as_posix()
        text = _read(root, name)
        _check(root, name, text)
        if text != (prompts.PROMPTS_DIR / name).read_text(encoding="utf-8"):
            overrides[name] = text
    _check_all_used(root, overrides)
    _trial_render(root, overrides)
    return overrides


def _read(root: Path, name: str) -> str:
    if name not in VARIABLES:
        close = difflib.get_close_matches(name, list(VARIABLES), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise PromptsError(
            f"--prompts {root}: {name} matches no shipped template ({hint}an override takes the name "
            f"of one of: {', '.join(VARIABLES)})."
        )
    try:
        return (root / name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PromptsError(f"--prompts {root}: {name} is not UTF-8 text. Save it as UTF-8.") from None


def _check(root: Path, name: str, text: str) -> None:
    env = prompts.environment()
    try:
        env.from_string(text)  # compiles: also catches unknown filters and tests
        used = meta.find_undeclared_variables(env.parse(text))
    except TemplateError as err:
        line = f" line {err.lineno}" if getattr(err, "lineno", None) else ""
        message = (err.message or "").rstrip(".")
        raise PromptsError(f"--prompts {root}: {name}{line} is not valid Jinja: {message}.") from None
    unknown = sorted(used - VARIABLES[name])
    if unknown:
        given = ", ".join(sorted(VARIABLES[name])) or "none"
        raise PromptsError(
            f"--prompts {root}: {name} uses {', '.join(unknown)}, which its technique does not pass "
            f"(variables given to {name}: {given}). Use only those."
        )


def _uses(env: Any, name: str) -> set[str]:
    """The variables `name` uses, with those of the templates it extends or includes."""
    ast = env.parse(env.loader.get_source(env, name)[0])
    found = set(meta.find_undeclared_variables(ast))
    for parent in meta.find_referenced_templates(ast):
        found |= _uses(env, parent) if parent else set()
    return found


def _check_all_used(root: Path, overrides: dict[str, str]) -> None:
    env = prompts.environment(tuple(sorted(overrides.items())))
    for name in sorted(VARIABLES, key=lambda n: n not in overrides):  # the user's own files first
        try:
            missing = sorted(VARIABLES[name] - _uses(env, name))
        except TemplateNotFound:
            continue  # reported by the trial render, with its name
        if missing:
            wanted = " ".join("{{ " + v + " }}" for v in missing)
            raise PromptsError(
                f"--prompts {root}: {name} never uses {', '.join(missing)}, which its technique passes "
                f"(so the prompt would ignore it). Add {wanted}."
            )


def _trial_render(root: Path, overrides: dict[str, str]) -> None:
    """Render every shipped template with the overrides in place and sample values, so an error
    that shows only when rendering (or in a template that extends an override) shows now."""
    with prompts.overriding(overrides):
        for name, variables in VARIABLES.items():
            try:
                prompts.render(name, **{v: SAMPLES[v] for v in variables})
            except TemplateNotFound as err:
                raise PromptsError(
                    f"--prompts {root}: {name} refers to {err.name}, which is neither shipped nor in {root}."
                ) from None
            except (ValueError, TemplateError, TypeError, AttributeError) as err:
                raise PromptsError(f"--prompts {root}: {name} fails a trial render: {err}") from None


def describe(overrides: dict[str, str]) -> dict[str, dict[str, str]]:
    """What the summary and the card record of each override: its text and its hash."""
    return {
        name: {"sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text}
        for name, text in sorted(overrides.items())
    }


def overrides_markdown(summary: dict[str, Any]) -> str:
    """The card's account of the templates a run replaced (empty when it used the shipped ones)."""
    described = summary.get("prompt_overrides") or {}
    if not described:
        return ""
    parts = [
        "Prompt templates replaced for this run (`--prompts`), so the data can be reproduced:",
    ]
    for name, info in described.items():
        text = info["text"].rstrip()
        parts.append(f"\n`{name}` (sha256 `{info['sha256'][:12]}`):\n\n```jinja\n{text}\n```")
    return "\n".join(parts)
