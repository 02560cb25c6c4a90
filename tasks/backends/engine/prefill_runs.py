"""How the engine cuts a group of new prompts into prefill runs.

A run is padded to its longest prompt, so it takes prompts (queued longest first) while padding
stays under `PADDING` of each row and the run under a number of positions: `MOST_POSITIONS`
(activation memory), or `MOST_POSITIONS_CPU` on a CPU, where a run's activations then stay in the
caches ([1024, 1536] floats) and prefill ran faster with identical outputs (docs/engine.md). One
padded batch of the bench's prompts would be half padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

PADDING = 0.15  # most padding a prompt may get in a prefill run
MOST_POSITIONS = 8192  # most positions in one prefill run
MOST_POSITIONS_CPU = 1024


class HasPrompt(Protocol):
    prompt: list[int]


R = TypeVar("R", bound=HasPrompt)


@dataclass
class Run(Generic[R]):
    """One prefill run: `prompts`, the group's prompts from index `first` on."""

    first: int
    prompts: list[R]


def split(group: list[R], start: int, most: int = MOST_POSITIONS) -> list[Run[R]]:
    """The runs of a longest-first `group`, whose first `start` tokens are already in the cache (a
    shared prefix), each of at most `most` positions (or a single prompt)."""
    runs, at = [], 0
    while at < len(group):
        width, end = len(group[at].prompt) - start, at + 1
        while (
            end < len(group)
            and len(group[end].prompt) - start >= (1 - PADDING) * width
            and (end - at + 1) * width <= most
        ):
            end += 1
        runs.append(Run(at, group[at:end]))
        at = end
    return runs
