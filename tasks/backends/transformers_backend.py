"""Local generation with Hugging Face transformers: the embedded model, a local directory or a Hub id.

Prompts are rendered with the model's chat template and stopped at the end-of-turn token or any
stop string. Llama-family models decode on the continuous-batching engine (tasks/backends/engine/scheduler.py:
a slot KV cache, finished rows replaced at once, calls from concurrent tasks merged into one batch);
other architectures go through `generate` in length-sorted, left-padded batches.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from pathlib import Path

from tasks.backends.base import Generation, GenerationParams, Prompt
from tasks.backends.embedded import EMBEDDED_MODEL, cache_root, embedded_model_dir
from tasks.backends.engine import Engine, Request, RowSampler, on_own_thread, supports
from tasks.backends.engine.cache_size import check_fits
from tasks.backends.engine.decode import SUPPORTED
from tasks.backends.engine.matmul import WEIGHTS, bf16_refusal, kernel_products
from tasks.pipeline.network import hub_reachable

# Sequences decoding together on the engine; measured in bench/generation.py (README, "Speed").
DEFAULT_SLOTS = 256

# End-of-turn tokens of common chat-template families; whichever the vocabulary has also stops.
_END_OF_TURN = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>"]


def resolve_model(model: str) -> str:
    """A path or Hub id that `from_pretrained` accepts for `model`."""
    if model in (EMBEDDED_MODEL, "embedded"):
        return str(embedded_model_dir())
    return model


def hub_options(source: str, model: str) -> dict:
    """from_pretrained options for a Hub id: the local HF cache when the Hub is out of reach."""
    if Path(source).exists() or hub_reachable():
        return {}
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(source, "config.json"), str)
    except ValueError:  # not even a valid repo id
        cached = False
    if cached:
        return {"local_files_only": True}
    raise ValueError(
        f"Model {model!r} is not a local directory, not in the Hugging Face cache, and the Hub "
        f"cannot be reached from this machine. Pass --model with a local model directory, "
        f"{EMBEDDED_MODEL!r} (the embedded default), or run where the Hub is reachable."
    )


def trust_remote_code() -> bool:
    """Off unless the user turns it on explicitly: a model repository's own Python code runs with
    the user's rights."""
    return os.environ.get("INSTRUCTFORGE_TRUST_REMOTE_CODE", "").lower() in ("1", "true", "yes")


def weights_dtype(dtype: str | None = None) -> str:
    """The engine's weight precision on CPU: `dtype`, else `INSTRUCTFORGE_DTYPE`, else fp32."""
    chosen = (dtype or os.environ.get("INSTRUCTFORGE_DTYPE") or "fp32").lower()
    if chosen not in WEIGHTS:
        raise ValueError(f"Unknown dtype {chosen!r} (INSTRUCTFORGE_DTYPE): use one of {', '.join(WEIGHTS)}.")
    return chosen


def load_model(model: str, device: str | None = None, slots: int | None = None, weights: str | None = None):
    """(tokenizer, model) for a model id; raises a ValueError that says what to pass instead. With
    `weights` (the engine's precision on CPU), also when the engine's model (with `slots` slots, if
    asked for) would not fit in memory."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    source = resolve_model(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = {**hub_options(source, model), "trust_remote_code": trust_remote_code()}
    try:
        config = AutoConfig.from_pretrained(source, **options)  # first: the clearest error for a bad model
    except (OSError, ValueError) as err:
        raise _unloadable(model, source, err) from None
    if weights and device == "cpu" and config.model_type in SUPPORTED:  # the engine's model
        if weights == "bf16" and bf16_refusal():
            raise ValueError(bf16_refusal())
        # the C kernel is built (or loaded) here, before the model: it decides the weights' memory
        kernel = weights == "fp32" and kernel_products(cache_root() / "kernels")
        check_fits(config, slots, weights, model, kernel=kernel)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        # fp32 on CPU (bf16 weights, where chosen, are made by the engine); bf16 on a GPU
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **options).to(device).eval()
    except (OSError, ValueError) as err:
        raise _unloadable(model, source, err) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # pad-token fallback: padding is masked, any id will do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer, lm


def _unloadable(model: str, source: str, err: Exception) -> ValueError:
    hint = "" if Path(source).exists() else " (is it a Hub id and this machine offline?)"
    if "trust_remote_code" in str(err):
        hint = " (it ships its own Python code; if you trust it, set INSTRUCTFORGE_TRUST_REMOTE_CODE=1)"
    return ValueError(
        f"Cannot load model {model!r}{hint}: {err}. Pass --model with a local model directory, a "
        f"reachable Hub id, or {EMBEDDED_MODEL!r} (the embedded default)."
    )


class TransformersBackend:
    """Llama-family models (SmolLM, Llama, Mistral, Qwen2) decode on the continuous-batching engine;
    any other architecture goes through `generate` in length-sorted batches. On CPU the engine's
    projections run in `dtype` ("fp32", the default, or "bf16": `INSTRUCTFORGE_DTYPE`;
    tasks/backends/engine/matmul.py)."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        batch_size: int | None = None,
        device: str | None = None,
        engine: bool = True,
        dtype: str | None = None,
    ) -> None:
        asked = batch_size or (
            int(os.environ["INSTRUCTFORGE_SLOTS"]) if os.environ.get("INSTRUCTFORGE_SLOTS") else None
        )
        batch_size = asked or DEFAULT_SLOTS
        self.model_id = model
        self.weights = weights_dtype(dtype)
        # on a thread that then ends: its OpenMP pool would slow every op of the engine's (threads.py)
        on_own_thread(self._setup, model, device, batch_size, engine, asked)
        # One `generate` at a time on the fallback path: concurrent Prefect tasks queue here
        # instead of fighting over the same cores.
        self._lock = threading.Lock()

    def _setup(
        self, model: str, device: str | None, batch_size: int, engine: bool, asked: int | None
    ) -> None:
        self.tokenizer, self.model = load_model(model, device, asked, self.weights if engine else None)
        self.device = self.model.device
        self.batch_size = batch_size
        self.context_window = getattr(self.model.config, "max_position_embeddings", None) or 2048
        vocab = self.tokenizer.get_vocab()
        eos = {self.tokenizer.eos_token_id} | {vocab[t] for t in _END_OF_TURN if t in vocab}
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.engine = None
        if engine and supports(self.model):
            refill = max(1, batch_size // 8)
            kernels = cache_root() / "kernels"  # the engine's C library, built once per CPU
            self.engine = Engine(
                self.model, self.tokenizer, self.eos_ids, batch_size, refill, kernels, self.weights
            )

    def render(self, prompt: Prompt) -> str:
        """The exact text the model continues: chat template + generation prompt, or a raw string."""
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        ids = [self.tokenizer(self.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
        results: list[Generation | None] = [None] * len(prompts)
        limit = self.context_window - params.max_new_tokens
        fits = [i for i, seq in enumerate(ids) if len(seq) <= limit]
        for i in set(range(len(prompts))) - set(fits):
            results[i] = Generation("", "prompt_too_long", len(ids[i]), 0)
        order = sorted(fits, key=lambda i: len(ids[i]), reverse=True)
        if self.engine is not None:
            outputs = self._generate_engine([ids[i] for i in order], params)
        else:
            outputs = self._generate_batched([ids[i] for i in order], params)
        for i, gen in zip(order, outputs):
            results[i] = gen
        return results  # type: ignore[return-value]

    def _generate_engine(self, batch: list[list[int]], params: GenerationParams) -> list[Generation]:
        # subtle: copies of one prompt in a call (Magpie sends its pre-query prompt many times) each
        # get their own random stream, or sampling would repeat one text.
        copies: Counter[tuple[int, ...]] = Counter()
        requests = []
        for seq in batch:
            copies[tuple(seq)] += 1
            sampler = RowSampler.create(params, seq, copy=copies[tuple(seq)] - 1)
            requests.append(Request(seq, params.max_new_tokens, sampler, params.stop))
        gens = []
        for seq, future in zip(batch, self.engine.submit(requests)):
            tokens, stopped = future.result()
            gens.append(self._finish(seq, tokens, stopped, params))
        return gens

    def _finish(self, prompt: list[int], tokens: list[int], ended: bool, params: GenerationParams):
        """The Generation for `tokens` (no end-of-turn token in them): decoded, cut at the first
        stop string, with why it ended."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for stop in params.stop:
            if stop in text:
                text, ended = text.split(stop, 1)[0], True
        finish = "stop" if ended or len(tokens) < params.max_new_tokens else "length"
        return Generation(text.strip(), finish, len(prompt), len(tokens))

    def _generate_batched(self, batch: list[list[int]], params: GenerationParams) -> list[Generation]:
        with self._lock:
            gens = []
            for start in range(0, len(batch), self.batch_size):
                # subtle: one seed per sub-batch, or sub-batches of one repeated prompt (Magpie)
                # would sample identical texts.
                sub = params.model_copy(update={"seed": params.seed + start})
                gens += self._generate_hf(batch[start : start + self.batch_size], sub)
            return gens

    def _generate_hf(self, batch: list[list[int]], params: GenerationParams) -> list[Generation]:
        import torch

        enc = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        sampling = params.temperature > 0
        torch.manual_seed(params.seed)
        # the engine's model has given its projections' weights to the engine: lent back meanwhile
        lent = self.engine.module_weights() if self.engine is not None else contextlib.nullcontext()
        with lent, torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=params.max_new_tokens,
                do_sample=sampling,
                temperature=params.temperature if sampling else None,
                top_p=params.top_p if sampling else None,
                top_k=None,
                repetition_penalty=params.repetition_penalty,
                eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                stop_strings=list(params.stop) or None,
                tokenizer=self.tokenizer,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        gens = []
        for row, prompt in zip(new, batch):
            tokens = [t for t in row.tolist() if t != self.tokenizer.pad_token_id]
            ended = bool(tokens) and tokens[-1] in self.eos_ids
            gens.append(self._finish(prompt, tokens[:-1] if ended else tokens, ended, params))
        return gens
