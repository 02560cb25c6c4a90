"""The continuous-batching engine on the real embedded model: greedy outputs equal one prompt at a
time through `generate` even when rows finish early and waiting prompts take their slots, sampled
outputs depend only on the prompt and the seed, and concurrent callers share one decode loop."""

import logging
import subprocess
import sys
import threading

import pytest

from tasks.backends import GenerationParams
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.backends.transformers_backend import TransformersBackend

pytestmark = pytest.mark.slow

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Give me three tips for keeping a sourdough starter alive."}],
    "The three primary colors are",  # a raw prompt, sent as is
    [{"role": "user", "content": "Say hello."}],
    [{"role": "user", "content": "Explain how a vaccine trains the immune system, step by step."}],
]


@pytest.fixture(scope="module")
def small():
    """Two slots for five prompts: rows finish at different steps and waiting prompts refill them."""
    backend = TransformersBackend(EMBEDDED_MODEL, batch_size=2)
    assert backend.engine is not None and backend.engine.refill == 1
    return backend


def one_at_a_time(backend, prompts, params):
    """The naive baseline: each prompt alone through transformers' `generate`."""
    ids = [backend.tokenizer(backend.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
    return [backend._generate_hf([seq], params)[0] for seq in ids]


def test_refilled_slots_give_the_unbatched_greedy_output(small):
    params = GenerationParams(max_new_tokens=40, temperature=0.0)
    engine = small.generate(PROMPTS, params)
    naive = one_at_a_time(small, PROMPTS, params)
    assert [g.text for g in engine] == [g.text for g in naive]
    assert [g.finish_reason for g in engine] == [g.finish_reason for g in naive]
    assert [g.completion_tokens for g in engine] == [g.completion_tokens for g in naive]
    assert {g.finish_reason for g in engine} == {"stop", "length"}  # rows did end at different steps


def test_the_vocabulary_head_in_row_blocks_changes_no_output(small, monkeypatch):
    """Steps whose logits would exceed `_FRESH_BYTES` compute the head in row blocks into a kept
    buffer (256 rows of this model's vocabulary do); here every block is one row."""
    from tasks.backends.engine import decode

    monkeypatch.setattr(decode, "_FRESH_BYTES", small.model.config.vocab_size * 4)
    params = GenerationParams(max_new_tokens=24, temperature=0.0)
    blocked = small.generate(PROMPTS[:3], params)
    assert [g.text for g in blocked] == [g.text for g in one_at_a_time(small, PROMPTS[:3], params)]


def test_sampled_output_depends_on_prompt_and_seed_only(small):
    params = GenerationParams(max_new_tokens=24, temperature=0.8, repetition_penalty=1.2, seed=7)
    together = [g.text for g in small.generate(PROMPTS, params)]
    alone = [small.generate([p], params)[0].text for p in PROMPTS[:2]]
    assert together[:2] == alone
    reseeded = small.generate(PROMPTS[:2], params.model_copy(update={"seed": 8}))
    assert [g.text for g in reseeded] != together[:2]


def test_concurrent_callers_get_what_they_would_get_alone(small):
    params = GenerationParams(max_new_tokens=16, temperature=0.0)
    expected = [small.generate([p], params)[0].text for p in PROMPTS[:4]]
    results = {}

    def call(name, prompts):
        results[name] = [g.text for g in small.generate(prompts, params)]

    threads = [threading.Thread(target=call, args=(i, PROMPTS[2 * i : 2 * i + 2])) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] + results[1] == expected


EXIT_RIGHT_AFTER = """
import atexit, threading
def report():  # registered first, so it runs last of the exit hooks
    alive = any(t.name == "decode-engine" and t.is_alive() for t in threading.enumerate())
    print("decode thread alive at exit:", alive)
atexit.register(report)
from tasks.backends import GenerationParams
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.backends.transformers_backend import TransformersBackend
backend = TransformersBackend(EMBEDDED_MODEL, batch_size=4)
prompts = [[{"role": "user", "content": "Say hello."}]] * 4
print(len(backend.generate(prompts, GenerationParams(max_new_tokens=6, temperature=0.0))))
"""


def test_the_decode_thread_is_stopped_before_the_interpreter_exits():
    """A script that exits as soon as `generate` returns: the decode thread could still be running
    its step's last torch ops, and the runtime's teardown then aborted the process now and then
    (exit status 134). The engine closes at exit, before that teardown."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_RIGHT_AFTER], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["4", "decode", "thread", "alive", "at", "exit:", "False"]
    assert "terminate" not in done.stderr


def test_a_closed_engine_stops_its_thread_and_takes_no_more_work():
    backend = TransformersBackend(EMBEDDED_MODEL, batch_size=2)
    params = GenerationParams(max_new_tokens=4, temperature=0.0)
    backend.generate(PROMPTS[:2], params)
    thread = backend.engine._thread
    backend.engine.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate(PROMPTS[:1], params)


def test_too_long_prompts_are_reported_not_generated(small):
    params = GenerationParams(max_new_tokens=8, temperature=0.0)
    huge = "word " * small.context_window
    gens = small.generate([huge, PROMPTS[0]], params)
    assert gens[0].finish_reason == "prompt_too_long" and gens[0].text == ""
    assert gens[1].text


def test_a_shared_prompt_prefix_is_prefilled_once_and_changes_no_output():
    """Chat prompts share the template and system prompt; Magpie sends one prompt many times. The
    prefix's keys and values are computed once and kept; outputs stay those of one prompt at a
    time."""
    backend = TransformersBackend(EMBEDDED_MODEL, batch_size=3)
    params = GenerationParams(max_new_tokens=12, temperature=0.0)
    chats = [p for p in PROMPTS if not isinstance(p, str)]
    full = sum(
        len(backend.tokenizer(backend.render(p), add_special_tokens=False)["input_ids"]) for p in chats
    )
    gens = backend.generate(chats, params)
    engine = backend.engine
    assert len(engine.prefix) >= 8  # the chat template's system turn, at least
    assert engine.stats["prefill_tokens"] < full - len(engine.prefix)
    assert [g.text for g in gens] == [g.text for g in one_at_a_time(backend, chats, params)]
    same = backend.generate([chats[0]] * 3, params)  # identical prompts: the whole prompt but its last token
    assert len(engine.prefix) == gens[0].prompt_tokens - 1
    assert {g.text for g in same} == {gens[0].text}


def test_prefill_runs_keep_padding_and_size_bounded():
    from tasks.backends.engine import prefill_runs, scheduler

    lengths = [103, 99, 97, 76, 74, 70, 63, 60, 55, 54, 50, 49, 48] + [30] * 400
    group = [scheduler.Request(list(range(n)), 8, None, ()) for n in lengths]
    for most in (prefill_runs.MOST_POSITIONS, prefill_runs.MOST_POSITIONS_CPU):
        chunks = prefill_runs.split(group, 20, most)
        assert [r for run in chunks for r in run.prompts] == group  # every prompt once, in order
        for run in chunks:
            chunk = run.prompts
            assert group[run.first] is chunk[0]
            width = len(chunk[0].prompt) - 20
            assert all(len(r.prompt) - 20 >= (1 - prefill_runs.PADDING) * width for r in chunk)
            assert len(chunk) * width <= most or len(chunk) == 1
        positions = sum(len(r.prompt) - 20 for r in group)
        assert len(chunks) < 12 + positions // most  # runs as full as the padding bound allows


def test_without_the_c_kernels_decoding_in_torch_gives_the_same_greedy_outputs(monkeypatch, caplog):
    """No compiler (or `INSTRUCTFORGE_ATTENTION=torch`): attention in torch over the same slot
    cache, the shared prefix copied into each slot, refilled slots and all. The engine says so,
    once, as it starts."""
    from tasks.backends.engine import kernels

    monkeypatch.setattr(kernels, "_kernel", None)
    with caplog.at_level(logging.INFO, logger="tasks.backends.engine"):
        backend = TransformersBackend(EMBEDDED_MODEL, batch_size=2)
    assert backend.engine.net.kernel is None
    said = [r.getMessage() for r in caplog.records if r.name == "tasks.backends.engine.scheduler"]
    assert len(said) == 1 and "in torch (no C kernels)" in said[0] and "C call" not in said[0]
    params = GenerationParams(max_new_tokens=12, temperature=0.0)
    chats = [p for p in PROMPTS if not isinstance(p, str)]
    gens = backend.generate(PROMPTS + chats, params)
    assert len(backend.engine.prefix) >= 8
    expected = [g.text for g in one_at_a_time(backend, PROMPTS, params)]
    assert [g.text for g in gens] == expected + [expected[PROMPTS.index(c)] for c in chats]


def test_each_step_runs_on_the_thread_count_measured_for_its_size(monkeypatch):
    """One thread can be faster for a few rows; that choice must not carry over to the next call's
    prefill of thousands of positions (it had: prefill ran at half speed for 20 s)."""
    import torch

    backend = TransformersBackend(EMBEDDED_MODEL, batch_size=8)
    engine = backend.engine
    counts = engine.threads
    if counts.most == 1 or counts.fixed:
        pytest.skip("needs more than one thread to choose from")
    monkeypatch.setattr(counts, "fastest", lambda rows: 1 if rows <= 2 else counts.most)
    used = []
    for name in ("prefill", "decode"):
        step = getattr(engine.net, name)

        def record(*args, _step=step, _name=name, **kwargs):
            size = args[2].numel()  # prefill: the prompt ids; decode: one token a row
            used.append((_name, size, torch.get_num_threads()))
            return _step(*args, **kwargs)

        monkeypatch.setattr(engine.net, name, record)
    params = GenerationParams(max_new_tokens=6, temperature=0.0)
    backend.generate(PROMPTS[:1], params)  # one row decodes on one thread
    backend.generate(PROMPTS, params)
    assert ("decode", 1, 1) in used
    big = [(name, size, threads) for name, size, threads in used if size > 2]
    assert big and all(threads == counts.most for _, _, threads in big)


def test_the_decode_layers_in_one_c_call_give_the_python_loops_logits_bit_for_bit(small):
    """`decode_layers.c` runs the step's layers where `SlotModel._layers` would call the same
    kernels one at a time: the same logits to the bit, for rows of different lengths."""
    import torch

    from tasks.backends.engine.slot_cache import SlotCache
    from tasks.backends.engine.tier import describe

    net = small.engine.net
    if net.fused is None:
        pytest.skip("not every piece of the layer runs in C here")
    assert "C kernels" in describe(net) and "in one C call" in describe(net)
    prompts = [small.tokenizer(small.render(p), add_special_tokens=False)["input_ids"] for p in PROMPTS[:3]]
    ids = torch.zeros(3, max(map(len, prompts)), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p)
    lengths = torch.tensor([len(p) for p in prompts])
    cache = SlotCache(net.lm, 4, 128, zeroed=False)
    with torch.inference_mode():
        tokens = net.prefill(cache, 0, ids, lengths).argmax(-1)
        fused = net.decode(cache, tokens, lengths).clone()
        kept, net.fused = net.fused, None
        try:
            plain = net.decode(cache, tokens, lengths).clone()
        finally:
            net.fused = kept
    assert torch.equal(fused, plain)
