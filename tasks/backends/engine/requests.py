"""What the scheduler passes around: a request in the queue, a finished one, and the running rows'
decode inputs."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from tasks.backends.engine.kernels import KeptPrefix
from tasks.backends.engine.sampling import RowSampler


@dataclass
class Request:
    prompt: list[int]
    max_new_tokens: int
    sampler: RowSampler
    stops: tuple[str, ...]
    future: Future = field(default_factory=Future)
    tokens: list[int] = field(default_factory=list)
    stopped: bool = False
    prefix: KeptPrefix | None = None  # the kept prefix its slot starts with
    unwritten: int = 0  # its slot's first positions, never written (the prefix, read from `prefix`)


class Output(NamedTuple):
    """A finished request: its new tokens (no end-of-turn token) and whether a stop string ended it."""

    tokens: list[int]
    stopped: bool


@dataclass
class Rows:
    """The running rows' decode inputs, in `Engine.running`'s order: each row's last chosen token
    and its stored positions [rows], and (under a repetition penalty) the tokens its context holds
    [rows, vocab] (else None)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    seen: torch.Tensor | None
