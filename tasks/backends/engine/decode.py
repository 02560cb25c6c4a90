"""A Llama-family forward pass over a preallocated, slot-indexed KV cache: the kernel of continuous
batching (Yu et al., 2022, *Orca: A Distributed Serving System for Transformer-Based Generative
Models*, OSDI; the slot cache is vLLM's idea without the paging).

Each running sequence owns one slot of the cache, its tokens stored from position 0, so sequences
of different lengths decode side by side with no left padding and a finished one can be replaced
at once. Running slots are kept at the front (`[0, n)`), so every step works on contiguous views.
The model's own modules (embeddings, norms, MLP activation, rotary embedding) and weights do the
work, except for what runs faster as the same fp32 arithmetic on CPU: attention and the cache;
the matrix products, with packed weights (a C kernel, or oneDNN), the MLP's SiLU and product and
the residual adds fused into them (`matmul.py`); and Llama-style RMSNorm and the rotary embedding
in C (`kernels.py`, checked against the modules when the model loads); where all of them run in
C, a decode step's layers are one C call (`fused.py`). So outputs follow the checkpoint's code and
weights (greedy outputs equal `generate`'s: tests/test_engine.py).

Why not `generate`: its growing cache copies every layer's keys and values on every step, rows that
finished keep being computed until the whole batch ends, and the full-vocabulary head runs on every
prompt position during prefill. Here a step writes one position per row in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.backends.engine import kernels
from tasks.backends.engine.allocator import keep_freed_memory
from tasks.backends.engine.fused import FusedLayers, silu_gated
from tasks.backends.engine.matmul import Projections
from tasks.backends.engine.slot_cache import SlotCache

# Largest output taken fresh from the allocator each step: glibc maps anything larger anew on
# every allocation (its largest mmap threshold), and the kernel then faults each page in.
_FRESH_BYTES = 32 * 2**20

# Architectures whose decoder layer is exactly: norm -> q/k/v (+bias) -> RoPE -> attention -> o_proj
# -> residual -> norm -> MLP -> residual, with full (not sliding-window) attention.
SUPPORTED = frozenset({"llama", "mistral", "qwen2"})


def supports(model) -> bool:
    config = model.config
    if config.model_type not in SUPPORTED:
        return False
    return not (getattr(config, "use_sliding_window", False) or getattr(config, "sliding_window", None))


def _projections(layers) -> list[torch.nn.Module]:
    """Every decoder layer's attention and MLP projections, in the order `SlotModel._layers` runs
    them (the C kernel prefetches each one's successor)."""
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    found = []
    for layer in layers:
        for part in (layer.self_attn, layer.mlp):
            found += [getattr(part, name) for name in names if hasattr(part, name)]
    return found


def _rms_norm_like(module) -> bool:
    """LlamaRMSNorm, or a copy of it under another model's name (Mistral, Qwen2)."""
    return (
        type(module).__name__ in ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.dtype == torch.float32
        and isinstance(getattr(module, "variance_epsilon", None), float)
    )


class SlotModel:
    """Prefill and decode steps of a Llama-family `*ForCausalLM` on a `SlotCache`."""

    def __init__(self, model, weights: str = "fp32") -> None:
        """`weights`: the projections' precision, "fp32" or "bf16" (matmul.py)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.lm = model
        self.body = model.model
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.rope = apply_rotary_pos_emb
        on_cpu = model.device.type == "cpu" and model.dtype == torch.float32
        if on_cpu:
            keep_freed_memory()  # activations reuse freed memory instead of faulting in new pages
        self.kernel = kernels.kernel() if on_cpu else None
        modules = [*_projections(self.body.layers), model.lm_head]
        self.linear = Projections(model, modules, weights, take_weights=True)
        # bf16 weights keep bf16 keys and values: half the bytes a decode step's attention reads
        # (stored rounded, read back widened to fp32; the arithmetic stays fp32)
        self.kv_dtype = torch.bfloat16 if self.linear.bf16 else model.dtype
        head = model.lm_head
        # Without oneDNN's packed weights, fp32 logits go into one kept buffer: a fresh [256, 49k]
        # output (50 MB) is a fresh mapping every step, and its page faults slow the head down.
        # (The C kernel writes into that buffer too.)
        self.head_into = (
            on_cpu
            and head not in self.linear.packed
            and isinstance(head, torch.nn.Linear)
            and head.bias is None
        )
        self.logits = torch.empty(0)
        layers = self.body.layers
        norms = [
            self.body.norm,
            *(n for x in layers for n in (x.input_layernorm, x.post_attention_layernorm)),
        ]
        self.norm_kernel = self.kernel is not None and all(map(_rms_norm_like, norms)) and self._norm_agrees()
        # the decode layers in one C call, where all run in C (fp32 weights and cache)
        self.fused = FusedLayers.build(self) if self.kv_dtype == torch.float32 else None

    def new_cache(self, slots: int, length: int) -> SlotCache:
        """An empty cache for these steps: keys and values of `kv_dtype`, zeroed only for the torch
        attention (the C kernel never reads past a row's own positions)."""
        return SlotCache(self.lm, slots, length, zeroed=self.kernel is None, dtype=self.kv_dtype)

    def cache_bytes_per_token(self) -> int:
        return SlotCache.bytes_per_token(self.lm, self.kv_dtype)

    def _norm_agrees(self) -> bool:
        """The kernel's RMSNorm gives the module's result (summation order aside) on this model."""
        module = self.body.norm
        x = torch.randn(3, module.weight.shape[0], generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            got = kernels.rms_norm(self.kernel, x, module.weight, module.variance_epsilon)
            return torch.allclose(got, module(x), rtol=1e-5, atol=1e-6)

    def norm(self, module, x):
        """`module(x)`, a Llama-style RMSNorm, through the C kernel where there is one."""
        if self.norm_kernel:
            return kernels.rms_norm(self.kernel, x, module.weight, module.variance_epsilon)
        return module(x)

    def _layers(self, x, positions, attend):
        """Run every decoder layer; `attend(layer_index, q, k, v)` returns the attention output."""
        batch, steps, _ = x.shape
        cos, sin = self.body.rotary_emb(x, positions)
        linear = self.linear
        for index, layer in enumerate(self.body.layers):
            attn = layer.self_attn
            h = self.norm(layer.input_layernorm, x)
            q = linear(attn.q_proj, h).view(batch, steps, self.heads, -1).transpose(1, 2)
            k = linear(attn.k_proj, h).view(batch, steps, self.kv_heads, -1).transpose(1, 2)
            v = linear(attn.v_proj, h).view(batch, steps, self.kv_heads, -1).transpose(1, 2)
            if self.kernel is None or not kernels.rope_(self.kernel, q, k, cos, sin):
                q, k = self.rope(q, k, cos, sin)
            out = attend(index, q, k, v, attn.scaling)
            x = linear.plus(attn.o_proj, out.transpose(1, 2).reshape(batch, steps, -1), x)
            x = self._mlp(layer.mlp, self.norm(layer.post_attention_layernorm, x), x)
        return self.norm(self.body.norm, x)

    def _mlp(self, mlp, h, residual):
        """`residual` + the gated MLP's own forward (Llama, Mistral, Qwen2), its projections
        through `linear`: the activation, the product with the up projection and the residual add
        run inside the products when the activation is SiLU (matmul.py)."""
        if not all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return residual + mlp(h)
        linear = self.linear
        if silu_gated(mlp):
            gate = linear.silu(mlp.gate_proj, h)
        else:
            gate = mlp.act_fn(linear(mlp.gate_proj, h))
        return linear.plus(mlp.down_proj, linear.times(mlp.up_proj, h, gate), residual)

    def prefill(self, cache: SlotCache, first: int, ids: torch.Tensor, lengths: torch.Tensor, prefix=None):
        """Prompts `ids` [B, T] (right-padded; true lengths `lengths`) into slots first..first+B-1 at
        positions P..P+T-1, after a shared prefix of P positions, `prefix` (a `kernels.KeptPrefix`;
        none: P = 0); returns the next-token logits [B, vocab],
        computed on each prompt's last position only."""
        batch, steps = ids.shape
        start = prefix.length if prefix is not None else 0
        positions = torch.arange(start, start + steps, device=ids.device).expand(batch, steps)
        end = start + steps
        mask = None  # query i (position start+i) sees the prefix and its own causal past: an additive
        if start:  # mask, made once (SDPA runs faster with it than with the same mask as bools)
            mask = torch.full((steps, end), -torch.inf, device=ids.device).triu(start + 1).to(self.lm.dtype)

        def attend(index, q, k, v, scale):
            cache.k[index, first : first + batch, :, start:end] = k  # rounded, for a bf16 cache
            cache.v[index, first : first + batch, :, start:end] = v
            # subtle: right padding sits after every real token, so the causal mask alone keeps it
            # out of real positions; the garbage it leaves in the cache is masked or overwritten.
            if mask is None:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
            # the prefix from the kept copy: under the C kernel, slots do not hold it (Engine._shared_prefix)
            keys = torch.cat([prefix.keys[index].expand(batch, -1, -1, -1).to(k.dtype), k], dim=2)
            values = torch.cat([prefix.values[index].expand(batch, -1, -1, -1).to(v.dtype), v], dim=2)
            return F.scaled_dot_product_attention(q, keys, values, mask, scale=scale, enable_gqa=True)

        x = self._layers(self.body.embed_tokens(ids), positions, attend)
        last = x[torch.arange(batch, device=ids.device), lengths - 1]
        return self.linear(self.lm.lm_head, last).float()

    def decode(self, cache: SlotCache, tokens: torch.Tensor, lengths: torch.Tensor, hot=None):
        """One token for each of the first n slots: `tokens` [n] go to positions `lengths` [n];
        returns logits [n, vocab], valid until the next call. The caller advances `lengths`.
        `hot` (a `kernels.Hot`): rows' shared prefixes, read by the kernel from one buffer."""
        n = tokens.shape[0]
        if self.kernel is not None:
            visible = (lengths + 1).to(torch.int64).contiguous()
            longest = int(visible.max())

            def attend(index, q, k, v, scale):
                keys, values = cache.k[index], cache.v[index]
                return kernels.decode_attention(
                    self.kernel, q, k, v, keys, values, visible, scale, hot, index, longest
                )

        else:
            attend = self._torch_attention(cache, torch.arange(n, device=tokens.device), lengths)
        x = self.body.embed_tokens(tokens[:, None])
        if self.fused is not None:
            x = self.fused(cache, x, lengths, visible, longest, hot)
        else:
            x = self._layers(x, lengths[:, None], attend)
        head, last = self.lm.lm_head, x[:, 0]
        if self.head_into or (self.linear.kernel is not None and head in self.linear.packed):
            return self.linear(head, last, out=self._kept_logits(n))
        block = _FRESH_BYTES // (self.lm.config.vocab_size * last.element_size())  # rows
        if head in self.linear.packed and n > block > 0:
            # subtle: row blocks into a kept buffer. Above glibc's largest mmap threshold (32 MB:
            # 171 rows of this vocabulary) every fresh output is a new mapping, page-faulted in
            # as it is written, which made a full step's head slower in one product than in blocks.
            logits = self._kept_logits(n)
            for start in range(0, n, block):
                logits[start : start + block] = self.linear(head, last[start : start + block])
            return logits
        return self.linear(head, last).float()

    def _kept_logits(self, n: int) -> torch.Tensor:
        weight = self.lm.lm_head.weight
        if self.logits.shape[0] < n:
            self.logits = torch.empty(n, weight.shape[0], dtype=weight.dtype, device=weight.device)
        return self.logits[:n]

    def _torch_attention(self, cache: SlotCache, rows: torch.Tensor, lengths: torch.Tensor):
        n = rows.shape[0]
        span = int(lengths.max()) + 1
        mask = (torch.arange(span, device=rows.device) <= lengths[:, None])[:, None, None, :]
        groups = self.heads // self.kv_heads

        def attend(index, q, k, v, scale):
            cache.k[index, rows, :, lengths] = k[:, :, 0].to(cache.k.dtype)
            cache.v[index, rows, :, lengths] = v[:, :, 0].to(cache.v.dtype)
            keys, values = (part[index, :n, :, :span].to(q.dtype) for part in (cache.k, cache.v))
            # Grouped-query attention without repeating keys: the query heads sharing a key head
            # become rows of one matrix product against that head's cache.
            scores = q.reshape(n, self.kv_heads, groups, -1) @ keys.transpose(-1, -2) * scale
            weights = scores.masked_fill_(~mask, float("-inf")).softmax(-1)
            return (weights @ values).reshape(n, self.heads, 1, -1)

        return attend
