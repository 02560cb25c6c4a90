"""Next-token choice for a batch of rows that each carry their own sampling parameters.

The order is transformers' own (repetition penalty, then temperature, then top-p), so a row means
what the same parameters mean to `generate`. Each row draws from its own generator, seeded from the
run seed and the row's prompt, so a sampled output depends on the prompt and the seed only, not on
which other prompts shared its batch: a resumed run regenerates exactly what a crash lost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

_CANDIDATES = 256  # tokens looked at before falling back to a full sort (see _nucleus)


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
    """CTRL's repetition penalty (Keskar et al., 2019) on tokens already in each row's context."""
    scaled = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, scaled, logits)


def choose(logits: torch.Tensor, samplers: list[RowSampler], seen: torch.Tensor | None) -> list[int]:
    """The next token of every row: greedy where temperature is 0, else nucleus sampling."""
    if seen is not None:
        penalty = torch.tensor([s.repetition_penalty for s in samplers], device=logits.device)
        logits = penalize(logits, seen, penalty[:, None])
    tokens = logits.argmax(-1)
    sampled = [i for i, s in enumerate(samplers) if s.generator is not None]
    if sampled:
        picks = _nucleus(logits[sampled], [samplers[i] for i in sampled])
        tokens[sampled] = picks.to(tokens.device)
    return tokens.tolist()


def _nucleus(logits: torch.Tensor, samplers: list[RowSampler]) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al., 2020). Sorting the whole vocabulary of every row took longer
    than the decode step itself here (660 ms for 128 rows of 49k logits); the nucleus almost always
    lies among the few most likely tokens, so rows are first cut to their top `_CANDIDATES` and
    sorted in full only when those hold less than top_p of the mass. Either way a row keeps the same
    tokens as a full sort, with probabilities normalized over the whole vocabulary."""
    temperature = torch.tensor([s.temperature for s in samplers], device=logits.device)[:, None]
    top_p = torch.tensor([s.top_p for s in samplers], device=logits.device)[:, None]
    # subtle: softmax, not exp(x - logsumexp): most of a vocabulary's exp() are subnormal floats,
    # which took 200 ms per step through exp/logsumexp here and 17 ms through softmax's kernel.
    probs = (logits / temperature).softmax(-1)
    sorted_probs, order = probs.topk(min(_CANDIDATES, probs.shape[-1]), dim=-1)
    wide = (sorted_probs.sum(-1, keepdim=True) < top_p)[:, 0].nonzero()[:, 0].tolist()
    draws = torch.stack([torch.rand((), generator=s.generator) for s in samplers]).to(logits.device)
    picks = _pick(sorted_probs, order, top_p, draws)
    if wide:  # flat distributions: the nucleus reaches past the candidates
        full, full_order = probs[wide].sort(-1, descending=True)
        picks[wide] = _pick(full, full_order, top_p[wide], draws[wide])
    return picks


def _pick(sorted_probs, order, top_p, draws) -> torch.Tensor:
    """Keep the smallest prefix whose mass reaches top_p (always at least the top token); draw."""
    before = sorted_probs.cumsum(-1) - sorted_probs
    cdf = sorted_probs.masked_fill(before >= top_p, 0.0).cumsum(-1)
    index = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None]).clamp_max(cdf.shape[-1] - 1)
    return order.gather(-1, index)[:, 0]
