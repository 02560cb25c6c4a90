"""A decode step's decoder layers in one C call (`decode_layers.c`), where every piece of the layer
already runs in C: the same kernels in the same order as `SlotModel._layers`, without the Python
glue of eleven ctypes calls a layer (tensor views, outputs allocated, arguments converted), which
was a few percent of a greedy run (docs/engine.md). Outputs are bit-identical:
tests/engine/test_engine.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# a layer's row of decode_layers.c's table: 7 packed weights, 7 biases, 2 norms, then the cache's keys, values
_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_CACHE_K, _CACHE_V = 16, 17


def _address(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.data_ptr()


def _parts(layer) -> list:
    """A decoder layer's seven projections, in decode_layers.c's order (None where missing)."""
    attn, mlp = layer.self_attn, layer.mlp
    return [getattr(attn, n, None) for n in _NAMES[:4]] + [getattr(mlp, n, None) for n in _NAMES[4:]]


def silu_gated(mlp) -> bool:
    """The MLP's activation is SiLU (which linear.c runs inside the gate's product)."""
    act = getattr(mlp, "act_fn", None)
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


@dataclass(frozen=True)
class Dims:
    """The sizes `decode_layers` takes: the vocabulary head's rows, the hidden width, the query and
    key/value heads, a head's width and the MLP's inner width."""

    vocab: int
    hidden: int
    heads: int
    kv_heads: int
    dim: int
    inter: int


class FusedLayers:
    """`SlotModel`'s decode layers through `decode_layers` (see `build` for when)."""

    @classmethod
    def build(cls, net) -> FusedLayers | None:
        """For a `SlotModel` whose norms, rotary embedding, attention and every projection (packed
        for linear.c) already run in C, with SiLU-gated MLPs; else None (the layers run in Python)."""
        layers = net.body.layers
        if net.kernel is None or not net.norm_kernel or net.linear.kernel is None:
            return None
        first = layers[0]
        eps, dim = first.input_layernorm.variance_epsilon, first.self_attn.head_dim
        for layer in layers:
            attn = layer.self_attn
            if (
                any(p not in net.linear.packed for p in _parts(layer))
                or not silu_gated(layer.mlp)
                or (attn.scaling, attn.head_dim) != (first.self_attn.scaling, dim)
                or {layer.input_layernorm.variance_epsilon, layer.post_attention_layernorm.variance_epsilon}
                != {eps}
            ):
                return None
        if dim % 2 or dim > 1024:  # decode_norms.c's rope
            return None
        return cls(net)

    def __init__(self, net) -> None:
        self.net, self.lib = net, net.kernel
        rows = []
        for layer in net.body.layers:
            parts = _parts(layer)
            norms = [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
            rows.append(
                [net.linear.packed[p].data_ptr() for p in parts]
                + [_address(p.bias) for p in parts]
                + [_address(w) for w in norms]
                + [0, 0]  # the cache's layers, set by __call__
            )
        self.table = torch.tensor(rows, dtype=torch.int64)
        self.cache_at: tuple | None = None  # the cache the table's last columns point into
        first, head = net.body.layers[0], net.lm.lm_head
        self.head = net.linear.packed.get(head)  # its first weights are prefetched by the last layer
        self.dims = Dims(
            vocab=head.out_features,
            hidden=net.lm.config.hidden_size,
            heads=net.heads,
            kv_heads=net.kv_heads,
            dim=first.self_attn.head_dim,
            inter=first.mlp.down_proj.in_features,
        )
        self.eps = first.input_layernorm.variance_epsilon
        self.scale = first.self_attn.scaling

    def __call__(self, cache, x: torch.Tensor, lengths, visible, longest: int, hot) -> torch.Tensor:
        """The layers on embeddings `x` [n, 1, hidden] (updated in place) at positions `lengths`,
        then the final norm; `visible`, `longest`, `hot` as `kernels.decode_attention` takes them."""
        net = self.net
        # subtle: the shape too. A new cache can be allocated where the old one was freed.
        where = (cache.k.data_ptr(), cache.v.data_ptr(), tuple(cache.k.shape))
        if self.cache_at != where:
            self.cache_at = where
            layer_bytes = cache.k.stride(0) * cache.k.element_size()
            offsets = torch.arange(len(self.table), dtype=torch.int64) * layer_bytes
            self.table[:, _CACHE_K] = cache.k.data_ptr() + offsets
            self.table[:, _CACHE_V] = cache.v.data_ptr() + offsets
        cos, sin = (t.contiguous() for t in net.body.rotary_emb(x, lengths[:, None]))
        x = x.contiguous()
        dims, keys = self.dims, cache.k[0]
        failed = self.lib.decode_layers(
            x.data_ptr(),
            x.shape[0],
            len(self.table),
            self.table.data_ptr(),
            _address(self.head),
            dims.vocab,
            dims.hidden,
            dims.heads,
            dims.kv_heads,
            dims.dim,
            dims.inter,
            self.eps,
            cos.data_ptr(),
            sin.data_ptr(),
            visible.data_ptr(),
            hot.keys.data_ptr() if hot else None,
            hot.values.data_ptr() if hot else None,
            hot.lengths.data_ptr() if hot else None,
            keys.stride(0),
            keys.stride(1),
            longest,
            self.scale,
            net.linear.panels_bf16,
            torch.get_num_threads(),
        )
        if failed:
            raise MemoryError("decode layers: out of memory for a step's buffers")
        return net.norm(net.body.norm, x)
