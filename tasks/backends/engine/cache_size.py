"""How large the engine's slot cache is: its length and slot count, within a memory budget.

Slots are added as requests arrive (a small job allocates a small cache) and the length grows for
a longer request; each change copies the running rows into a new cache, so both grow in steps.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

ALIGN = 128  # cache length grows in steps of this many tokens
# where memory caps the slots, rows are as long as the requests need, in steps of this many
TIGHT_ALIGN = 32
# First allocation: a prompt plus a 256-token response fits, so the cache rarely has to grow (a
# grow copies every running row into a new cache of up to a few GB).
FIRST_LENGTH = 512
MIN_SLOTS = 8  # the smallest cache allocated (more as requests arrive)

# Memory the process needs besides weights, cache and activations: the interpreter, torch,
# transformers, the tokenizer and the allocator's kept blocks (allocator.py).
_BASE_BYTES = 1.5 * 2**30
_SPARE_BYTES = 0.5 * 2**30  # left free once the cache is full: the page cache, other processes
_PREFILL_POSITIONS = 1024  # prefill_runs.MOST_POSITIONS_CPU: the most positions one run computes


class Size(NamedTuple):
    length: int  # tokens per slot
    slots: int


def budget(device: torch.device) -> float:
    """Bytes the KV cache may take: `INSTRUCTFORGE_KV_CACHE_GB`, else half the machine's memory on
    CPU (`engine_budget` then caps it at what is still available once the model is loaded; the
    other half is for the model, the process and whatever else runs) and 40% of the free memory on
    a GPU."""
    if os.environ.get("INSTRUCTFORGE_KV_CACHE_GB"):
        return float(os.environ["INSTRUCTFORGE_KV_CACHE_GB"]) * 2**30
    if device.type == "cuda":
        return 0.4 * torch.cuda.mem_get_info(device)[0]
    try:
        return max(2**30, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2)
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a fixed 3 GB
        return 3 * 2**30


def engine_budget(device: torch.device, config, slots: int, weights: str = "fp32") -> float:
    """`budget(device)`, and on CPU (unless `INSTRUCTFORGE_KV_CACHE_GB` sets it) no more than the
    memory still available with the model loaded, less a step's activations: measured once, when
    the engine starts, so the cache never grows into memory the machine does not have."""
    most = budget(device)
    if device.type != "cpu" or os.environ.get("INSTRUCTFORGE_KV_CACHE_GB"):
        return most
    left = available_memory() - activation_bytes(config, slots) - _SPARE_BYTES
    return max(min(most, left), per_token_bytes(config, weights) * FIRST_LENGTH)


def plan(
    need: int, demand: int, length: int | None, per_token: int, budget: float, most: int, idle: bool = False
) -> Size:
    """The length and slot count of a cache with at least `need` tokens per slot and slots for
    `demand` sequences. Length: the current `length`, if there is a cache and it is long enough;
    else a multiple of ALIGN, at least FIRST_LENGTH, unless the budget then holds fewer slots than
    wanted and `need` rounded up to TIGHT_ALIGN holds more. Slots: `demand` rounded up to a power
    of two, at least MIN_SLOTS, at most `most` and at most what `budget` bytes hold at `per_token`
    bytes per token (but one). `idle`: no rows run in the current cache, so it may be replaced by
    a fresh plan where that holds more slots."""
    if idle and length is not None:
        kept, fresh = (plan(need, demand, at, per_token, budget, most) for at in (length, None))
        return fresh if fresh.slots > kept.slots else kept
    wanted = min(most, max(MIN_SLOTS, 1 << (demand - 1).bit_length()))

    def fit(length: int) -> int:
        return max(1, int(budget // (per_token * length)))

    if length is None or length < need:
        length = max(-(-need // ALIGN) * ALIGN, FIRST_LENGTH)
        # where memory, not demand, caps the slots (a large model's cache), rows as long as these
        # requests need leave room for more of them; a longer request later grows the cache
        exact = -(-need // TIGHT_ALIGN) * TIGHT_ALIGN
        if fit(length) < wanted and fit(exact) > fit(length):
            length = exact
    return Size(length, min(wanted, fit(length)))


def available_memory() -> float:
    """Bytes this process may still take: /proc/meminfo's MemAvailable, or less where a cgroup
    limit (memory.max less memory.current) leaves less; the physical memory where neither is known."""
    found = []
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            found.append(int(limit) - int(open("/sys/fs/cgroup/memory.current").read()))
    except (OSError, ValueError):
        pass
    if found:
        return float(min(found))
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float(2**40)  # unknown: nothing is refused


def _dims(config) -> tuple[int, int, int, int, int, int, int]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return (
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        heads,
        kv_heads,
        head_dim,
        config.vocab_size,
    )


def parameter_counts(config) -> tuple[int, int, int]:
    """(layer projections, vocabulary head if untied else 0, everything else) parameters of a
    Llama-family config (Qwen2's attention biases are counted with the projections)."""
    hidden, inter, layers, heads, kv_heads, head_dim, vocab = _dims(config)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    if getattr(config, "model_type", "") == "qwen2":
        attention += heads * head_dim + 2 * kv_heads * head_dim
    projections = layers * (attention + 3 * hidden * inter)
    head = 0 if getattr(config, "tie_word_embeddings", False) else vocab * hidden
    return projections, head, vocab * hidden + (2 * layers + 1) * hidden


def weight_bytes(config, weights: str, kernel: bool = False) -> tuple[float, float]:
    """(while loading, once loaded) bytes of the model's weights as the engine holds them. The
    model loads in fp32; the engine then packs every projection and the vocabulary head once:
    bf16 packs them in half the bytes and frees the fp32 projections; fp32 through the C kernel
    (`kernel`: `matmul.kernel_products()`) frees them too, its panels taking their place; fp32
    through oneDNN keeps the model's weights beside the packed copy (matmul.py)."""
    projections, head, rest = parameter_counts(config)
    vocab_head = _dims(config)[6] * config.hidden_size
    fp32 = 4 * (projections + head + rest)
    if weights == "bf16":
        loaded = 2 * projections + 4 * (head + rest) + 2 * vocab_head
        return fp32 + 2 * projections, loaded
    if kernel:
        return fp32, fp32 + 4 * vocab_head
    return fp32, fp32 + 4 * (projections + vocab_head)


def activation_bytes(config, slots: int) -> float:
    """A step's and a prefill run's activations, roughly: the rows' hidden states, MLP products
    and logits (fp32), and a prefill run's attention scores."""
    hidden, inter, _, heads, _, _, vocab = _dims(config)
    rows = max(slots, _PREFILL_POSITIONS)
    return 4 * (rows * (6 * hidden + 3 * inter) + max(slots, 64) * vocab + heads * _PREFILL_POSITIONS**2)


def per_token_bytes(config, weights: str = "fp32") -> int:
    """The KV cache's bytes per position (keys and values, every layer) on CPU: SlotCache's, fp32,
    or bf16 with bf16 weights (SlotModel.kv_dtype)."""
    _, _, layers, _, kv_heads, head_dim, _ = _dims(config)
    return 2 * layers * kv_heads * head_dim * (2 if weights == "bf16" else 4)


def need_bytes(config, slots: int, length: int, weights: str, kernel: bool = False) -> dict[str, float]:
    """What a run of `slots` slots of `length` positions needs: weights (`weight_bytes`), KV
    cache, activations, the process itself, and the total (the larger of loading and running)."""
    loading, loaded = weight_bytes(config, weights, kernel)
    parts = {
        "weights": loaded,
        "kv_cache": float(per_token_bytes(config, weights) * slots * length),
        "activations": activation_bytes(config, slots),
        "process": _BASE_BYTES,
    }
    parts["total"] = max(loading + _BASE_BYTES, sum(parts.values()))
    return parts


def largest_slots(
    config, length: int, weights: str, memory: float, most: int = 1 << 16, kernel: bool = False
) -> int:
    """The most slots of `length` positions whose run fits `memory` bytes (0: not even one)."""
    low, high = 0, most
    while low < high:
        mid = (low + high + 1) // 2
        if need_bytes(config, mid, length, weights, kernel)["total"] <= memory:
            low = mid
        else:
            high = mid - 1
    return low


def check_fits(
    config, slots: int | None, weights: str, model: str, memory: float | None = None, kernel: bool = False
) -> None:
    """Refuse (ValueError), before anything is loaded, a model (with `slots` slots of FIRST_LENGTH
    positions asked for explicitly; None: the fewest the engine starts with) that needs more memory
    than this machine has available: one line with the numbers and what to change. Where the
    slot count was not asked for, the engine takes as many as fit (`engine_budget`). `kernel`: as
    `weight_bytes` takes it."""
    memory = available_memory() if memory is None else memory
    asked = slots or MIN_SLOTS
    parts = need_bytes(config, asked, FIRST_LENGTH, weights, kernel)
    if parts["total"] <= memory:
        return
    gb = 2**30
    fits = largest_slots(config, FIRST_LENGTH, weights, memory, most=asked, kernel=kernel)
    if fits:
        fix = f"ask for at most {fits} slots (INSTRUCTFORGE_SLOTS={fits})"
    else:
        fix = "use a smaller model" + (
            "" if weights == "bf16" else ", INSTRUCTFORGE_DTYPE=bf16 (half the weights and KV cache)"
        )
    raise ValueError(
        f"Model {model!r} with {asked} slots of {FIRST_LENGTH} tokens needs {parts['total'] / gb:.1f} GB "
        f"({weights} weights {parts['weights'] / gb:.1f} GB, KV cache {parts['kv_cache'] / gb:.1f} GB, "
        f"activations {parts['activations'] / gb:.1f} GB, process {parts['process'] / gb:.1f} GB) but "
        f"{memory / gb:.1f} GB is available: {fix}, or free memory."
    )
