"""What an OpenAI-compatible server says about the chat template of the model it serves.

The OpenAI API has no field for it, so each server family is asked in its own way, and what is
missing is simply skipped (a 404 is an answer too):

- llama.cpp's server publishes the template itself: `GET /props` has `chat_template`, with the
  `bos_token` and `eos_token` it renders with;
- vLLM publishes no template, but `GET /v1/models` gives each served name's `root`, the path or
  Hub id it was loaded from (`--served-model-name` can hide it);
- TGI's `GET /info` gives `model_id`; SGLang's `GET /get_model_info` gives `model_path` and
  `tokenizer_path`;
- `transformers serve` serves models under their Hub id or directory, so the name is the path.

The names and paths found are where a tokenizer may hold the template (tasks/templates/chat_templates.py
reads them offline, tokenizer files only).
"""

from __future__ import annotations

from typing import Any

import httpx

from tasks.backends.base import ServedTemplate

TIMEOUT = 10.0


def _get(client: httpx.Client, url: str, asked: list[str]) -> Any:
    """The JSON a GET answers, or None (recorded in `asked` either way)."""
    try:
        response = client.get(url, timeout=TIMEOUT)
    except httpx.TransportError as err:
        asked.append(f"GET {url}: {type(err).__name__}")
        return None
    asked.append(f"GET {url}: {response.status_code}")
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _strings(data: Any, *keys: str) -> list[str]:
    if not isinstance(data, dict):
        return []
    return [data[k] for k in keys if isinstance(data.get(k), str) and data[k]]


def _model_roots(models: Any, name: str) -> list[str]:
    """The `root` (vLLM) of the served name's entry in a /v1/models listing."""
    entries = models.get("data") if isinstance(models, dict) else None
    mine = [e for e in entries or [] if isinstance(e, dict) and e.get("id") == name]
    return [root for e in mine for root in _strings(e, "root")]


def served_template(client: httpx.Client, base_url: str, name: str) -> ServedTemplate:
    """Ask the server at `base_url` (its /v1 URL) for the template of the model served as `name`."""
    root = base_url.removesuffix("/v1")
    asked: list[str] = []
    props = _get(client, f"{root}/props", asked)
    names = [name, *_model_roots(_get(client, f"{base_url}/models", asked), name)]
    names += _strings(_get(client, f"{root}/info", asked), "model_id")
    names += _strings(_get(client, f"{root}/get_model_info", asked), "tokenizer_path", "model_path")
    template = _strings(props, "chat_template")
    specials = {k: v for k in ("bos_token", "eos_token") for v in _strings(props, k)}
    return ServedTemplate(
        source=template[0] if template else None,
        where=f"{root}/props" if template else "",
        special_tokens=specials,
        model_names=tuple(dict.fromkeys(names)),
        asked=tuple(asked),
    )
