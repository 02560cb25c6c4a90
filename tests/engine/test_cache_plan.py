"""The engine's slot cache on the real embedded model: its length and slot count within the memory
budget (`cache_size.plan`), growing for a longer request, adding slots as requests arrive, and
rows as long as a job needs where memory caps the slots; outputs stay one prompt at a time's."""

import threading

import pytest

from tasks.backends import GenerationParams
from tasks.backends.embedded import EMBEDDED_MODEL
from tasks.backends.transformers_backend import TransformersBackend
from tests.engine.test_engine import PROMPTS, one_at_a_time

pytestmark = pytest.mark.slow


def test_a_longer_request_shrinks_the_slot_count_to_stay_in_the_memory_budget(monkeypatch):
    # 50 MB holds 2 slots of 512 tokens of this model's cache, but only 1 slot of 768.
    monkeypatch.setenv("INSTRUCTFORGE_KV_CACHE_GB", str(50 / 1024))
    backend = TransformersBackend(EMBEDDED_MODEL, batch_size=2)
    params = GenerationParams(max_new_tokens=8, temperature=0.0)
    short = backend.generate(PROMPTS[:2], params)
    assert backend.engine.slots == 2
    long_prompt = "Summarize: " + "the tide rises and falls twice a day. " * 70
    sizes, make_room = [], backend.engine._make_room
    monkeypatch.setattr(
        backend.engine, "_make_room", lambda *a: make_room(*a) and not sizes.append(backend.engine.cache)
    )
    gens = backend.generate([long_prompt, *PROMPTS[:2]], params)
    assert sizes[0].slots == 1 and sizes[0].length >= 600  # the long request: one longer slot
    assert (sizes[-1].slots, sizes[-1].length) == (2, 512)  # once it is done: two of 512 again
    assert [g.text for g in gens[1:]] == [g.text for g in short]
    assert gens[0].prompt_tokens > 512 and gens[0].text


def test_a_job_in_tight_memory_gets_rows_as_long_as_it_needs_and_more_slots(monkeypatch):
    """Where the budget holds fewer slots of 512 positions than a job wants (a large model's cache),
    the cache is as long as the job's requests need, so more of them decode at once; an idle cache
    left long by an earlier request is planned afresh."""
    # 50 MB holds 2 slots of 512 positions of this model's cache, 8 of 128 or fewer
    monkeypatch.setenv("INSTRUCTFORGE_KV_CACHE_GB", str(50 / 1024))
    backend = TransformersBackend(EMBEDDED_MODEL, batch_size=8)
    params = GenerationParams(max_new_tokens=8, temperature=0.0)
    backend.generate(["Summarize: " + "the tide rises and falls twice a day. " * 70], params)
    assert backend.engine.slots == 1 and backend.engine.cache.length >= 600
    gens = backend.generate(PROMPTS, params)
    assert backend.engine.slots == 8 and backend.engine.cache.length < 512
    assert [g.text for g in gens] == [g.text for g in one_at_a_time(backend, PROMPTS, params)]


def test_the_cache_gets_slots_as_requests_arrive_and_keeps_running_rows():
    backend = TransformersBackend(EMBEDDED_MODEL, batch_size=64)
    params = GenerationParams(max_new_tokens=20, temperature=0.0)
    alone = [g.text for g in backend.generate(PROMPTS[:3], params)]
    assert backend.engine.cache.slots == 8  # three rows: the smallest cache, not 64 slots
    many = [
        [{"role": "user", "content": f"Name a fruit that starts with the letter {c}."}]
        for c in "ABCDEFGHIJKL"
    ]
    expected = [g.text for g in backend.generate(many, params)]
    results = {}
    first = threading.Thread(target=lambda: results.update(a=backend.generate(PROMPTS[:3], params)))
    first.start()
    results["b"] = backend.generate(many, params)  # arrives while the first rows decode
    first.join()
    assert [g.text for g in results["a"]] == alone and [g.text for g in results["b"]] == expected
    assert backend.engine.cache.slots == 16


def test_the_cache_grows_in_steps_within_its_memory_budget():
    from tasks.backends.engine import cache_size

    mb, plenty = 2**20, 2**40
    assert cache_size.plan(100, 3, None, mb, plenty, 256) == (512, 8)  # a small job: the smallest cache
    assert cache_size.plan(100, 100, 512, mb, plenty, 256) == (512, 128)  # a power of two of slots
    assert cache_size.plan(100, 1000, 512, mb, plenty, 256) == (512, 256)  # at most `most`
    assert cache_size.plan(600, 3, 1024, mb, plenty, 256) == (1024, 8)  # long enough: kept
    # a longer request: the next multiple of 128 tokens, and only the slots the budget holds
    assert cache_size.plan(600, 100, 512, mb, 640 * 10 * mb, 256) == (640, 10)
    assert cache_size.plan(600, 100, 512, mb, 1, 256) == (640, 1)  # never none
    # memory, not demand, caps the slots: rows as long as the requests need, so more of them fit
    assert cache_size.plan(100, 100, None, mb, 512 * 64 * mb, 256) == (128, 128)
    assert cache_size.plan(300, 256, None, mb, 512 * 64 * mb, 256) == (320, 102)
    assert cache_size.plan(100, 40, None, mb, 512 * 64 * mb, 256) == (512, 64)  # 512 holds them all
    # an idle cache left long by an earlier request: planned afresh where that holds more slots
    assert cache_size.plan(100, 100, 1024, mb, 512 * 64 * mb, 256) == (1024, 32)
    assert cache_size.plan(100, 100, 1024, mb, 512 * 64 * mb, 256, idle=True) == (128, 128)
    assert cache_size.plan(100, 3, 1024, mb, plenty, 256, idle=True) == (1024, 8)  # no gain: kept
