"""Backends are looked up by a string id and loaded once per process: Prefect tasks receive the
backend and model ids (serializable, shown in the UI, part of the cache key), never a loaded model."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from tasks.backends.base import Backend, Generation, GenerationParams, Message, Prompt

__all__ = [
    "Backend",
    "Generation",
    "GenerationParams",
    "Message",
    "Prompt",
    "BACKENDS",
    "get_backend",
]


def _fake(model: str) -> Backend:
    from tasks.backends.fake import FakeBackend

    return FakeBackend(model)


def _transformers(model: str) -> Backend:
    from tasks.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model)


def _openai(model: str) -> Backend:
    from tasks.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(model)


BACKENDS: dict[str, Callable[[str], Backend]] = {
    "transformers": _transformers,
    "openai": _openai,
    "fake": _fake,
}

# The ids flows accept (their `--backend` choices); keep in step with BACKENDS.
BackendId = Literal["transformers", "openai", "fake"]

_loaded: dict[tuple[str, str], Backend] = {}
_lock = threading.Lock()


def get_backend(backend: str, model: str) -> Backend:
    """The process-wide instance of `backend` serving `model`, loaded on first use."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}. Use one of: {', '.join(sorted(BACKENDS))}.")
    from tasks.pipeline.usage import metered

    with _lock:
        key = (backend, model)
        if key not in _loaded:
            # Every model call is counted into the calling task's token usage (tasks/pipeline/usage.py).
            _loaded[key] = metered(BACKENDS[backend](model))
        return _loaded[key]
