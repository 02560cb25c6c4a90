"""Continuous batching (Yu et al., 2022, *Orca*): one decode loop serves every caller at once.

Requests from all concurrent `generate` calls (Prefect runs several batch tasks at a time) wait in
one queue. The loop keeps up to `slots` sequences decoding together; when one ends, a waiting
prompt takes its slot, so the batch stays full instead of shrinking while its longest row finishes.
New prompts are prefilled in groups of similar length (each call's prompts are queued longest
first). Memory is bounded by the slot cache, whatever the number of rows.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import torch

from tasks.backends.engine import cache_size, kernels, prefill_runs
from tasks.backends.engine.decode import SlotModel
from tasks.backends.engine.kernels import Hot, KeptPrefix
from tasks.backends.engine.requests import Output, Request, Rows
from tasks.backends.engine.sampling import choose
from tasks.backends.engine.slot_cache import SlotCache
from tasks.backends.engine.threads import ThreadCounts
from tasks.backends.engine.tier import describe

log = logging.getLogger(__name__)
_MIN_PREFIX = 8  # shorter shared prefixes are prefilled with the rest
_CLOSE_WAIT_S = 30.0  # longest wait at exit for the decode thread to finish its step


class Engine:
    """Runs requests on a background thread; `submit` returns futures of `Output`s.

    `build_dir`: where the C kernels are built and cached (by source and CPU); None builds them
    for this process only. `weights`: the projections' precision ("fp32" or "bf16", matmul.py)."""

    def __init__(
        self,
        model,
        tokenizer,
        eos_ids: list[int],
        slots: int,
        refill: int,
        build_dir: Path | None = None,
        weights: str = "fp32",
    ) -> None:
        if model.device.type == "cpu":
            kernels.kernel(build_dir)  # built (or loaded) here; the model's layers and the sampler use it
        self.net = SlotModel(model, weights)
        log.info(describe(self.net))
        self.tokenizer = tokenizer
        self.eos = set(eos_ids)
        self.slots = self.max_slots = slots
        self.refill = max(1, refill)
        self.vocab = model.config.vocab_size
        self.device = model.device
        # the KV cache's memory, fixed now that the model is loaded (cache_size.engine_budget)
        self.budget = cache_size.engine_budget(self.device, model.config, slots, weights)
        cpu = self.device.type == "cpu"
        self.prefill_positions = prefill_runs.MOST_POSITIONS_CPU if cpu else prefill_runs.MOST_POSITIONS
        self.cache: SlotCache | None = None
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        projection = self.net.body.layers[0].mlp.up_proj
        # a decode-shaped product, run as the steps run it (packed weights or not)
        self.threads = ThreadCounts(
            lambda x: self.net.linear(projection, x), projection.in_features, self.device
        )
        self.prefix: list[int] = []  # the shared prompt prefix whose keys and values are kept
        self.prefix_kv: KeptPrefix | None = None
        # the torch attention reads a row's kept prefix from its slot; the C kernel, from prefix_kv
        self.prefix_in_slots = self.net.kernel is None
        self._hot: Hot | None = None  # the running rows' prefixes, for the kernel (None: changed)
        # counters for the benchmark: decode steps, rows summed over steps, prefilled positions, and
        # seconds spent in decode steps and in prefill
        self.stats = {"steps": 0, "row_steps": 0, "prefill_tokens": 0, "decode_s": 0.0, "prefill_s": 0.0}

    def module_weights(self):
        """A context in which the model's modules run again, their weights lent back (matmul.py)."""
        return self.net.linear.module_weights()

    def submit(self, requests: list[Request]) -> list[Future]:
        with self._wake:
            if self._closed:
                raise RuntimeError("the decode engine was closed (the interpreter is exiting)")
            self.waiting.extend(requests)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="decode-engine", daemon=True)
                self._thread.start()
                atexit.register(self.close)
            self._wake.notify()
        return [r.future for r in requests]

    def close(self) -> None:
        """Stop the decode thread (after its current step) and wait for it. Runs at exit: a
        script that ends right after `generate` returned could otherwise exit while the thread
        still ran the step's last torch ops, and the C++ runtime's teardown then aborted the
        process ("terminate called without an active exception", exit status 134)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=_CLOSE_WAIT_S)

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self.waiting and not self.running and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                with torch.inference_mode():
                    self._run()
            except BaseException as err:  # a backend failure fails every request in flight
                for request in [*self.running, *self._drain()]:
                    if not request.future.done():
                        request.future.set_exception(err)
                self.running, self._hot = [], None

    def _drain(self) -> list[Request]:
        with self._wake:
            drained, self.waiting = list(self.waiting), deque()
        return drained

    def _run(self) -> None:
        rows: Rows | None = None
        while not self._closed:
            queued = len(self.running) + len(self.waiting)
            if self.cache is not None and self.waiting and self.cache.slots < min(self.max_slots, queued):
                self._make_room(self.cache.length, queued)  # more requests than slots: add slots
            free = self.slots - len(self.running)
            # groups of `refill` at least (a prefill costs about a step), or all that wait if they
            # fit: a few left over would wait for `refill` rows to finish, then decode alone
            if self.waiting and (free >= min(self.refill, self.slots, len(self.waiting)) or not self.running):
                rows = self._admit(free, rows)
            if not self.running:
                return
            self.threads.use(len(self.running))
            if self._hot is None and self.net.kernel is not None:
                self._hot = Hot([r.prefix for r in self.running])
            began = time.perf_counter()
            logits = self.net.decode(self.cache, rows.tokens, rows.lengths, self._hot)
            self.stats["decode_s"] += time.perf_counter() - began
            self.stats["steps"] += 1
            self.stats["row_steps"] += len(self.running)
            chosen = choose(logits, [r.sampler for r in self.running], rows.seen)
            rows = self._advance(chosen, rows.lengths + 1, rows.seen)

    def _admit(self, free: int, rows: Rows | None) -> Rows | None:
        """Prefill up to `free` waiting requests into free slots and choose their first tokens;
        returns the running rows' inputs, theirs appended to `rows` (those of the rows running)."""
        with self._wake:
            group = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        demand = len(self.running) + len(group) + len(self.waiting)
        room = self._make_room(max(len(r.prompt) + r.max_new_tokens for r in group), demand)
        keep = self.slots - len(self.running) if room else 0
        if keep < len(group):  # a longer request needs a bigger cache: it waits at the front
            with self._wake:
                self.waiting.extendleft(reversed(group[keep:]))
            group = group[:keep]
        if not group:
            return rows
        group.sort(key=lambda r: len(r.prompt), reverse=True)
        first, began = len(self.running), time.perf_counter()
        start = self._shared_prefix(group, first)
        for r in group:  # decode reads these positions from the kept prefix (kernels.Hot)
            r.prefix = self.prefix_kv if start else None
            r.unwritten = 0 if self.prefix_in_slots else start
        logits = torch.cat(
            [
                self._prefill(run.prompts, first + run.first, start)
                for run in prefill_runs.split(group, start, self.prefill_positions)
            ]
        )
        self.stats["prefill_s"] += time.perf_counter() - began
        plen = torch.tensor([len(r.prompt) for r in group], device=self.device)
        seen = rows.seen if rows is not None else None
        new_seen = self._seen(group) if seen is not None or self._penalized(group) else None
        if new_seen is not None and seen is None:
            seen = self._seen(self.running)
        seen = None if new_seen is None else torch.cat([seen, new_seen])
        chosen = choose(logits, [r.sampler for r in group], new_seen)
        self.running.extend(group)
        self._hot = None
        tokens = plen.new_tensor(chosen)
        if rows is not None:
            tokens, plen = torch.cat([rows.tokens, tokens]), torch.cat([rows.lengths, plen])
        return self._advance(tokens.tolist(), plen, seen, start=first)

    def _prefill(self, chunk: list[Request], first: int, start: int) -> torch.Tensor:
        """Prefill `chunk` (longest first) into slots first.., after `start` shared prefix tokens."""
        ids = torch.zeros(len(chunk), len(chunk[0].prompt) - start, dtype=torch.long)
        for i, r in enumerate(chunk):
            ids[i, : len(r.prompt) - start] = torch.tensor(r.prompt[start:])
        rest = torch.tensor([len(r.prompt) - start for r in chunk], device=self.device)
        self.stats["prefill_tokens"] += int(rest.sum())
        self.threads.use(ids.numel())
        prefix = self.prefix_kv if start else None
        return self.net.prefill(self.cache, first, ids.to(self.device), rest, prefix)

    def _shared_prefix(self, group: list[Request], first: int) -> int:
        """Prefix caching (as vLLM and SGLang do): prompts built from one template share their first
        tokens (chat template and system prompt; the whole prompt for Magpie). The shared prefix's
        keys and values are computed once and kept, so prefill runs on the rest only. The C kernel
        reads them from the kept copy (kernels.Hot) and the slots' first positions stay unwritten
        (~40,000 fewer fresh pages in a bench run); the torch attention gets a copy in each slot.
        Returns the prefix length slots first..first+len(group)-1 start with."""
        room = min(len(r.prompt) for r in group) - 1  # the last token is prefilled: it gives the logits
        shared = group[0].prompt[:room]
        for r in group[1:]:
            differ = (i for i, (a, b) in enumerate(zip(shared, r.prompt)) if a != b)
            shared = shared[: next(differ, len(shared))]
        held = self.prefix
        usable = 0 < len(held) <= len(shared) and shared[: len(held)] == held
        if len(group) > 1 and len(shared) >= max(_MIN_PREFIX, len(held) + _MIN_PREFIX if usable else 0):
            ids = torch.tensor([shared], device=self.device)
            self.net.prefill(self.cache, first, ids, torch.tensor([len(shared)], device=self.device))
            self.prefix, self.prefix_kv = shared, self.cache.read(first, len(shared))
            self.stats["prefill_tokens"] += len(shared)
        elif not usable:
            return 0
        if self.prefix_in_slots:
            self.cache.fill(first, len(group), self.prefix_kv)
        return len(self.prefix)

    def _penalized(self, requests: list[Request]) -> bool:
        return any(r.sampler.repetition_penalty != 1.0 for r in [*self.running, *requests])

    def _seen(self, requests: list[Request]) -> torch.Tensor:
        seen = torch.zeros(len(requests), self.vocab, dtype=torch.bool, device=self.device)
        for i, r in enumerate(requests):
            seen[i, r.prompt + r.tokens] = True
        return seen

    def _make_room(self, need: int, demand: int) -> bool:
        """A cache of at least `need` tokens per slot and enough slots for `demand` sequences, within
        the memory budget (`cache_size.plan`); the running sequences are copied over. When a longer
        request leaves room for fewer slots than are running, returns False until enough have
        finished (the caller waits)."""
        current, per_token = self.cache.length if self.cache else None, self.net.cache_bytes_per_token()
        idle = not self.running  # an idle cache may be replaced by a fresh plan with more slots
        length, want = cache_size.plan(need, demand, current, per_token, self.budget, self.max_slots, idle)
        if self.cache is not None and self.cache.length == length and self.cache.slots >= want:
            return True
        if self.cache is None or not self.running:
            self.cache = None  # release the old cache before allocating the new one
            self.cache = self.net.new_cache(want, length)
        elif want < len(self.running):
            return False
        else:
            self.cache.resize(want, length, keep=len(self.running))
        self.slots = want
        return True

    def _advance(self, chosen: list[int], lengths, seen, start: int = 0) -> Rows:
        """Append each running row's new token (rows before `start` were advanced already);
        finish rows that hit an end-of-turn token, a stop string or their token limit."""
        done = []
        for i in range(start, len(self.running)):
            request, token = self.running[i], chosen[i]
            if token in self.eos:
                done.append(i)
                continue
            request.tokens.append(token)
            if seen is not None:
                seen[i, token] = True
            if self._hit_stop(request) or len(request.tokens) >= request.max_new_tokens:
                done.append(i)
        tokens = lengths.new_tensor(chosen)
        if done:
            self._hot = None
        for i in reversed(done):  # highest first, so each move fills a slot still in use
            last = len(self.running) - 1
            self.running[i].future.set_result(Output(self.running[i].tokens, self.running[i].stopped))
            if i != last:
                self.cache.move(last, i, int(lengths[last]), self.running[last].unwritten)
                self.running[i] = self.running[last]
                tokens[i], lengths[i] = tokens[last], lengths[last]
                if seen is not None:
                    seen[i] = seen[last]
            self.running.pop()
        n = len(self.running)
        return Rows(tokens[:n], lengths[:n], None if seen is None else seen[:n])

    def _hit_stop(self, request: Request) -> bool:
        if not request.stops:
            return False
        # A stop string of c characters spans at most c tokens (every token adds a character).
        window = max(len(s) for s in request.stops) + 1
        tail = self.tokenizer.decode(request.tokens[-window:], skip_special_tokens=True)
        request.stopped = any(s in tail for s in request.stops)
        return request.stopped
