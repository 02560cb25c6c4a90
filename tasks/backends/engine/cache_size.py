"""How large the engine's slot cache is: its length and slot count, within a memory budget.

Slots are added as requests arrive (a small job allocates a small cache) and the length grows for
a longer request; each change copies the running rows into a new cache, so both grow in steps.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

ALIGN = 128  # cache length grows in steps of this many tokens
# First allocation: a prompt plus a 256-token response fits, so the cache rarely has to grow (a
# grow copies every running row into a new cache of up to a few GB).
FIRST_LENGTH = 512
MIN_SLOTS = 8  # the smallest cache allocated (more as requests arrive)


class Size(NamedTuple):
    length: int  # tokens per slot
    slots: int


def budget(device: torch.device) -> float:
    """Bytes the KV cache may take: `INSTRUCTFORGE_KV_CACHE_GB`, else a quarter of the machine's
    memory on CPU (6 GB of 24 here: 256 slots of 512 tokens for the 135M model) and 40% of the free
    memory on a GPU."""
    if os.environ.get("INSTRUCTFORGE_KV_CACHE_GB"):
        return float(os.environ["INSTRUCTFORGE_KV_CACHE_GB"]) * 2**30
    if device.type == "cuda":
        return 0.4 * torch.cuda.mem_get_info(device)[0]
    try:
        return max(2**30, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 4)
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a fixed 3 GB
        return 3 * 2**30


def plan(need: int, demand: int, length: int | None, per_token: int, budget: float, most: int) -> Size:
    """The length and slot count of a cache with at least `need` tokens per slot (the current
    `length`, if there is a cache and it is long enough; else a multiple of ALIGN, at least
    FIRST_LENGTH) and slots for `demand` sequences, rounded up to a power of two, at least
    MIN_SLOTS, at most `most` and at most what `budget` bytes hold at `per_token` bytes per token
    (but one)."""
    if length is None or length < need:
        length = max(-(-need // ALIGN) * ALIGN, FIRST_LENGTH)
    fit = max(1, int(budget // (per_token * length)))
    return Size(length, min(most, fit, max(MIN_SLOTS, 1 << (demand - 1).bit_length())))
