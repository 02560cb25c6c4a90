"""Nucleus sampling over the top candidates keeps exactly the tokens, and draws exactly the token, of
a full sort of the vocabulary, for peaked and flat distributions alike."""

import pytest
import torch

from tasks.backends import GenerationParams
from tasks.backends.engine import kernels
from tasks.backends.engine.sampling import _CANDIDATES, RowSampler, _nucleus_torch, choose, sample_rows


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def code(request, monkeypatch):
    """Every test runs on the C sampler (sample.c, where it builds) and on the torch ops."""
    if request.param == "torch":
        monkeypatch.setattr(kernels, "_kernel", None)
    elif kernels.kernel() is None:
        pytest.skip("no C compiler here: sampling runs in torch")
    return request.param


def full_sort_reference(logits, samplers):
    """Temperature, then top-p over the whole sorted vocabulary, with each row's own draw."""
    picks = []
    for row, sampler in zip(logits, samplers):
        probs, order = (row / sampler.temperature).softmax(-1).sort(descending=True)
        keep = (probs.cumsum(-1) - probs) < sampler.top_p
        cdf = (probs * keep).cumsum(-1)
        draw = torch.rand((), generator=sampler.generator) * cdf[-1]
        picks.append(int(order[torch.searchsorted(cdf, draw[None]).clamp_max(len(cdf) - 1)]))
    return picks


def samplers(n, seed, top_p=0.9, temperature=0.7):
    params = GenerationParams(max_new_tokens=4, temperature=temperature, top_p=top_p, seed=seed)
    return [RowSampler.create(params, [row, 7]) for row in range(n)]


def test_candidates_give_the_full_sort_choice_on_peaked_and_flat_rows():
    generator = torch.Generator().manual_seed(0)
    vocab = 5000
    ranks = torch.arange(1, vocab + 1).float().log()
    peaked = torch.stack([-3 * ranks[torch.randperm(vocab, generator=generator)] for _ in range(6)])
    flat = torch.randn(6, vocab, generator=generator) * 0.1  # the nucleus spans thousands of tokens
    logits = torch.cat([peaked, flat])
    for seed in range(5):
        got = choose(logits.clone(), samplers(len(logits), seed), None)
        assert got == full_sort_reference(logits, samplers(len(logits), seed))


def nucleus_size(row, sampler):
    probs = (row / sampler.temperature).softmax(-1).sort(descending=True).values
    return int(((probs.cumsum(-1) - probs) < sampler.top_p).sum())


def test_every_tier_of_candidates_gives_the_full_sort_choice():
    """Rows whose nucleus fits the first cut, needs the second, or needs the full sort; greedy rows
    mixed in keep their argmax."""
    generator = torch.Generator().manual_seed(2)
    vocab = 5000
    scales = (8.0, 3.0, 2.0, 1.5, 0.1)
    logits = torch.cat([torch.randn(4, vocab, generator=generator) * scale for scale in scales])
    rows = samplers(len(logits), 3)
    sizes = [nucleus_size(row, sampler) for row, sampler in zip(logits, rows)]
    bounds = [0, *_CANDIDATES, vocab]
    assert all(any(low < n <= high for n in sizes) for low, high in zip(bounds, bounds[1:]))
    for seed in range(5):
        assert choose(logits.clone(), samplers(len(logits), seed), None) == full_sort_reference(
            logits, samplers(len(logits), seed)
        )
    mixed = samplers(len(logits), 0)
    greedy = samplers(len(logits), 0, temperature=0.0)
    mixed[::2] = greedy[::2]
    got = choose(logits.clone(), mixed, None)
    assert got[::2] == logits[::2].argmax(-1).tolist()
    assert got[1::2] == full_sort_reference(logits[1::2], samplers(len(logits), 0)[1::2])


def test_top_p_one_can_reach_any_token_and_a_tiny_top_p_is_greedy():
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(1))
    assert choose(logits.clone(), samplers(3, 0, top_p=1e-6), None) == logits.argmax(-1).tolist()
    picks = {
        tuple(choose(logits.clone(), samplers(3, seed, top_p=1.0, temperature=5.0), None))
        for seed in range(20)
    }
    assert len(picks) == 20


def test_tokens_masked_with_minus_infinity_are_never_drawn():
    """The subnormal floor raises only finite logits: a -inf token keeps probability 0."""
    logits = torch.zeros(2, 10)
    logits[:, 3:] = float("-inf")
    drawn = {
        t
        for seed in range(100)
        for t in choose(logits.clone(), samplers(2, seed, top_p=1.0, temperature=1.0), None)
    }
    assert drawn == {0, 1, 2}


def test_top_p_one_draws_each_token_at_its_probability_whatever_the_batch():
    """Top-p 1 (Magpie) draws from the cumulative sum in vocabulary order, without sorting: each
    token comes up at its own probability, and a row draws the same token alone or in any batch."""
    probs = torch.tensor([0.05, 0.5, 0.0, 0.3, 0.15])
    logits = probs.log()[None].expand(4000, -1).contiguous()  # -inf for the impossible token
    rows = [RowSampler.create(GenerationParams(temperature=1.0, top_p=1.0, seed=s), [s]) for s in range(4000)]
    drawn = torch.tensor(choose(logits.clone(), rows, None))
    share = torch.bincount(drawn, minlength=5) / len(drawn)
    assert share[2] == 0 and torch.allclose(share, probs, atol=0.025)
    # the same rows, again from their seeds: alone, and beside rows that take the nucleus path
    again = [RowSampler.create(GenerationParams(temperature=1.0, top_p=1.0, seed=s), [s]) for s in range(3)]
    alone = [choose(logits[:1].clone(), [row], None)[0] for row in again]
    assert alone == drawn[:3].tolist()
    again = [RowSampler.create(GenerationParams(temperature=1.0, top_p=1.0, seed=s), [s]) for s in range(3)]
    nucleus = samplers(3, 0)
    mixed = choose(
        logits[:6].clone(), [again[0], nucleus[0], again[1], nucleus[1], again[2], nucleus[2]], None
    )
    assert mixed[::2] == drawn[:3].tolist()
    assert mixed[1::2] == full_sort_reference(logits[:3], samplers(3, 0))


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    from tasks.backends.engine.sampling import penalize

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(4))
    seen = torch.rand(3, 50, generator=torch.Generator().manual_seed(5)) < 0.3
    penalty = torch.tensor([1.3, 1.0, 2.0])
    scaled = torch.where(logits < 0, logits * penalty[:, None], logits / penalty[:, None])
    expected = torch.where(seen, scaled, logits)  # transformers' RepetitionPenaltyLogitsProcessor
    assert torch.equal(penalize(logits.clone(), seen, penalty), expected)


def test_the_c_sampler_draws_what_the_torch_ops_draw_on_a_whole_vocabulary(code):
    """SmolLM2-sized rows shaped like a model's (a few likely tokens, a long tail): the same token
    for the same draw, but where a draw lands within rounding of a boundary (sample.c)."""
    if code == "torch":
        pytest.skip("compares the two")
    generator = torch.Generator().manual_seed(6)
    rows, vocab = 128, 49152
    ranks = torch.arange(1, vocab + 1).float().log()
    logits = torch.stack([-2 * ranks[torch.randperm(vocab, generator=generator)] for _ in range(rows)])
    logits += torch.randn(rows, vocab, generator=generator)
    temperature = torch.full((rows,), 0.7)
    for top_p in (0.5, 0.9, 1.0):
        for _ in range(3):
            draws = torch.rand(rows, generator=generator)
            top = torch.full((rows,), top_p)
            got = sample_rows(kernels.kernel(), logits, temperature, top, draws, _CANDIDATES[0])
            expected = _nucleus_torch(logits.clone(), temperature, top, draws)
            assert (got >= 0).all()  # these nuclei fit the first candidates
            assert (got != expected).sum() <= 1


def test_the_c_sampler_ranks_tied_tokens_by_id_and_leaves_rows_past_its_candidates(code):
    if code == "torch":
        pytest.skip("the C sampler's own rules")
    lib = kernels.kernel()
    logits = torch.tensor([[1.0, 5.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    one, small = torch.ones(2), torch.full((2,), 0.3)
    # row 0: tokens 1 and 2 tie; a top-p of 0.3 keeps the first of them only, whatever the draw
    for draw in (0.0, 0.5, 0.999):
        picks = sample_rows(lib, logits, one, small, torch.full((2,), draw), 1)
        assert picks.tolist() == [1, -1]  # row 1: its nucleus needs 2 of 4 equal tokens, past 1


def test_the_greedy_choice_is_torchs_argmax_ties_and_masked_rows_included(code):
    logits = torch.randn(6, 49152, generator=torch.Generator().manual_seed(7))
    logits[1, [10, 20000, 40000]] = 50.0  # a tie: the first index
    logits[2] = float("-inf")  # nothing finite: index 0, as torch gives
    logits[3, 49151] = 60.0  # the last token, past the last whole vector
    greedy = samplers(6, 0, temperature=0.0)
    assert (
        choose(logits.clone(), greedy, None)
        == logits.argmax(-1).tolist()
        == [
            int(logits[0].argmax()),
            10,
            0,
            49151,
            int(logits[4].argmax()),
            int(logits[5].argmax()),
        ]
    )
    tail = torch.randn(3, 21, generator=torch.Generator().manual_seed(8))  # a vocabulary of 21
    assert choose(tail.clone(), samplers(3, 0, temperature=0.0), None) == tail.argmax(-1).tolist()
