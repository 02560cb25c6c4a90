"""Next-token choice for a batch of rows that each carry their own sampling parameters.

The order is transformers' own (repetition penalty, then temperature, then top-p), so a row means
what the same parameters mean to `generate`. Each row draws from its own generator, seeded from the
run seed and the row's prompt, so a sampled output depends on the prompt and the seed only, not on
which other prompts shared its batch: a resumed run regenerates exactly what a crash lost.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import torch

from tasks.backends.engine import kernels

# Tokens looked at, in turn, before falling back to a full sort (see _nucleus). At the flows'
# temperature 0.7 and top-p 0.9 the nucleus almost never holds more than 64 tokens; at
# temperature 1 and top-p 0.95 many rows need more than 64 and a few more than 256, so the middle
# tier keeps them from a top-k over 1,024.
_CANDIDATES = (64, 256, 1024)
# Scaled logits further than this below their row's largest are raised to it before the softmax:
# their exp() would be a subnormal float (below e^-87), which this CPU computes far slower
# (SmolLM2's own logits at temperature 0.7 never reach that range; a model that masks tokens with
# huge negative logits would). Such a token's probability becomes e^-80 (1.8e-35) instead of a few
# 1e-38 or 0: nothing that a float32 sum or a top-p cut can see.
_FLOOR = 80.0
_kept = threading.local()  # each engine thread's probability buffer (see _probs_buffer)


def row_seed(seed: int, prompt_ids: list[int], copy: int = 0) -> int:
    key = f"{seed}|{prompt_ids}" + (f"|{copy}" if copy else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class RowSampler:
    """Sampling state of one row: its parameters and its random stream."""

    temperature: float
    top_p: float
    repetition_penalty: float
    generator: torch.Generator | None

    @classmethod
    def create(cls, params, prompt_ids: list[int], copy: int = 0) -> RowSampler:
        """`copy` numbers repeats of the same prompt within one call: each samples differently."""
        generator = None
        if params.temperature > 0:
            generator = torch.Generator().manual_seed(row_seed(params.seed, prompt_ids, copy))
        return cls(params.temperature, params.top_p, params.repetition_penalty, generator)


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al., 2019) on tokens already in each row's context
    (`penalty` [rows]), in place, touching only those tokens: a few hundred a row, of 49k."""
    rows, tokens = seen.nonzero(as_tuple=True)
    values, factor = logits[rows, tokens], penalty[rows]
    logits[rows, tokens] = torch.where(values < 0, values * factor, values / factor)
    return logits


def choose(logits: torch.Tensor, samplers: list[RowSampler], seen: torch.Tensor | None) -> list[int]:
    """The next token of every row: greedy where temperature is 0, else nucleus sampling.
    Overwrites `logits` (the decode step's, which nothing reads after this)."""
    if seen is not None:
        penalty = torch.tensor([s.repetition_penalty for s in samplers], device=logits.device)
        logits = penalize(logits, seen, penalty)
    sampled = [i for i, s in enumerate(samplers) if s.generator is not None]
    if not sampled:
        return _argmax(logits).tolist()
    greedy = [i for i, s in enumerate(samplers) if s.generator is None]
    if not greedy:  # every row samples: no copy of the logits
        return _nucleus(logits, samplers).tolist()
    tokens = torch.empty(len(samplers), dtype=torch.long, device=logits.device)
    tokens[greedy] = _argmax(logits[greedy]).to(tokens.device)
    tokens[sampled] = _nucleus(logits[sampled], [samplers[i] for i in sampled]).to(tokens.device)
    return tokens.tolist()


def _kernel(logits: torch.Tensor):
    """The C kernels, for fp32 logits on the CPU where they are built; else None."""
    return kernels.kernel() if logits.device.type == "cpu" and logits.dtype == torch.float32 else None


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """Greedy choice: in C where it can (one read of each row), else torch."""
    lib = _kernel(logits)
    return logits.argmax(-1) if lib is None else argmax_rows(lib, logits)


def _nucleus(logits: torch.Tensor, samplers: list[RowSampler]) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al., 2020): each row's draw from its generator, then the
    choice in C (sample_rows, sample.c: a few reads of each row instead of nine torch passes) where
    the kernels are built and the logits are fp32 on the CPU, and in torch otherwise and for the
    rows the kernel leaves (a nucleus past its first candidates: rare, flat distributions)."""
    temperature = torch.tensor([s.temperature for s in samplers], device=logits.device)
    top_p = torch.tensor([s.top_p for s in samplers], device=logits.device)
    draws = torch.stack([torch.rand((), generator=s.generator) for s in samplers]).to(logits.device)
    lib = _kernel(logits)
    if lib is None:
        return _nucleus_torch(logits, temperature, top_p, draws)
    picks = sample_rows(lib, logits, temperature, top_p, draws, _CANDIDATES[0])
    rest = (picks < 0).nonzero()[:, 0]
    if len(rest):
        picks[rest] = _nucleus_torch(logits[rest], temperature[rest], top_p[rest], draws[rest])
    return picks


def _nucleus_torch(logits, temperature, top_p, draws) -> torch.Tensor:
    """Nucleus sampling in torch ops, overwriting `logits`, with each row's `draws`. A row with
    top-p 1 (Magpie's instructions) keeps its whole vocabulary, so it draws from the cumulative sum
    of its probabilities in vocabulary order: no sort. For the others, sorting the whole vocabulary of
    every row took longer than the decode step itself; the nucleus almost always lies among the few
    most likely tokens, so rows are first cut to their top `_CANDIDATES[0]`, then those whose
    candidates hold less than top_p of the mass to the next count, and so on; only rows past the
    last are sorted in full. Either way a row keeps the same tokens as a full sort, with
    probabilities normalized over the whole vocabulary."""
    temperature, top_p = temperature[:, None], top_p[:, None]
    # subtle: in place and into a kept buffer. A fresh [256, 49k] tensor (48 MB) is above glibc's
    # largest mmap threshold: each was a new mapping, page-faulted in as it was written, which
    # made a full step's sampling far slower.
    scaled = logits.div_(temperature)
    # subtle: softmax, not exp(x - logsumexp): most of a vocabulary's exp() are subnormal floats,
    # far slower through exp/logsumexp than through softmax's kernel; raising the far tail to
    # _FLOOR below the top keeps them out of subnormal range altogether.
    masked = scaled == float("-inf") if bool(scaled.amin() == float("-inf")) else None
    scaled.clamp_min_(scaled.amax(-1, keepdim=True) - _FLOOR)
    if masked is not None:  # a token masked with -inf keeps probability 0
        scaled.masked_fill_(masked, float("-inf"))
    probs = torch.softmax(scaled, -1, out=_probs_buffer(scaled))
    picks = torch.empty(len(logits), dtype=torch.long, device=logits.device)
    rows = torch.arange(len(logits), device=logits.device)
    whole = top_p[:, 0] >= 1.0
    if bool(whole.any()):
        every = bool(whole.all())
        at = rows if every else rows[whole]
        # the scaled logits are spent: their buffer takes the cumulative sums
        cdf = torch.cumsum(probs if every else probs[at], -1, out=scaled[: len(at)])
        # right=True: token i is drawn for a point in [cdf[i-1], cdf[i]), so never at probability 0
        index = torch.searchsorted(cdf, (draws[at] * cdf[:, -1])[:, None], right=True)
        picks[at] = index[:, 0].clamp_max(cdf.shape[-1] - 1)
        rows = rows[~whole]
    for count in _CANDIDATES:
        if not len(rows):
            return picks
        pending = probs if len(rows) == len(logits) else probs[rows]  # (no copy on the first pass)
        sorted_probs, order = pending.topk(min(count, probs.shape[-1]), dim=-1)
        enough = sorted_probs.sum(-1) >= top_p[rows, 0]
        if count >= probs.shape[-1]:
            enough[:] = True
        done = rows[enough]
        picks[done] = _pick(sorted_probs[enough], order[enough], top_p[done], draws[done])
        rows = rows[~enough]
    if len(rows):  # flat distributions: the nucleus reaches past every candidate
        full, full_order = probs[rows].sort(-1, descending=True)
        picks[rows] = _pick(full, full_order, top_p[rows], draws[rows])
    return picks


def sample_rows(
    lib, logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, draws: torch.Tensor, count: int
) -> torch.Tensor:
    """Each row's nucleus-sampled token through sample.c (`lib`, kernels.kernel()): fp32 `logits`
    [rows, vocab], per-row `temperature`, `top_p` and uniform `draws` [rows]; -1 for a row whose
    nucleus reaches past its `count` most likely tokens."""
    logits = logits.contiguous()
    rows, vocab = logits.shape
    temperature, top_p, draws = (t.to(torch.float32).contiguous() for t in (temperature, top_p, draws))
    picks = torch.empty(rows, dtype=torch.int64)
    failed = lib.sample_rows(
        logits.data_ptr(),
        rows,
        vocab,
        temperature.data_ptr(),
        top_p.data_ptr(),
        draws.data_ptr(),
        count,
        picks.data_ptr(),
        torch.get_num_threads(),
    )
    if failed:
        raise MemoryError("sampling: out of memory for its candidate buffer")
    return picks


def argmax_rows(lib, logits: torch.Tensor) -> torch.Tensor:
    """`logits.argmax(-1)` of fp32 `logits` [rows, vocab] through sample.c."""
    logits = logits.contiguous()
    picks = torch.empty(logits.shape[0], dtype=torch.int64)
    lib.argmax_rows(
        logits.data_ptr(), logits.shape[0], logits.shape[1], picks.data_ptr(), torch.get_num_threads()
    )
    return picks


def _probs_buffer(like: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like `like`, kept by the calling thread from one step to the next."""
    buffer = getattr(_kept, "probs", None)
    if (
        buffer is None
        or buffer.numel() < like.numel()
        or (buffer.dtype, buffer.device) != (like.dtype, like.device)
    ):
        buffer = _kept.probs = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
    return buffer[: like.numel()].view(like.shape)


def _pick(sorted_probs, order, top_p, draws) -> torch.Tensor:
    """Keep the smallest prefix whose mass reaches top_p (always at least the top token); draw."""
    before = sorted_probs.cumsum(-1) - sorted_probs
    cdf = sorted_probs.masked_fill(before >= top_p, 0.0).cumsum(-1)
    index = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None]).clamp_max(cdf.shape[-1] - 1)
    return order.gather(-1, index)[:, 0]
