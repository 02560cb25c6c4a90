"""The engine's KV cache: a preallocated slot per running sequence (decode.py says why)."""

from __future__ import annotations

import torch

from tasks.backends.engine import kernels


class SlotCache:
    """Keys and values for `slots` sequences of up to `length` tokens, per layer.

    `zeroed=False` leaves the memory uninitialised, for readers that never look past a sequence's
    own positions (the C decode kernel): zero-filling a cache of gigabytes takes seconds, and untouched
    pages (positions no sequence reaches) then never take memory at all. The torch attention reads
    padded spans, where garbage times a zero weight could be NaN, so it gets a zeroed cache.
    `dtype`: the keys' and values' (default: the model's; `SlotModel.kv_dtype`)."""

    def __init__(self, model, slots: int, length: int, zeroed: bool = True, dtype=None) -> None:
        config = model.config
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (config.num_hidden_layers, slots, config.num_key_value_heads, length, self.head_dim)
        make = torch.zeros if zeroed else torch.empty
        self.zeroed = zeroed
        self.k = make(shape, dtype=dtype or model.dtype, device=model.device)
        self.v = make(shape, dtype=dtype or model.dtype, device=model.device)

    @staticmethod
    def bytes_per_token(model, dtype=None) -> int:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        width = config.num_hidden_layers * config.num_key_value_heads * head_dim
        return 2 * width * torch.finfo(dtype or model.dtype).bits // 8

    @property
    def length(self) -> int:
        return self.k.shape[3]

    @property
    def slots(self) -> int:
        return self.k.shape[1]

    def resize(self, slots: int, length: int, keep: int) -> None:
        """`slots` slots of `length` tokens, keeping the first `keep` slots' stored positions (the
        running sequences): more slots as more requests arrive, longer ones for a longer request."""
        for name in ("k", "v"):
            old = getattr(self, name)
            shape = (old.shape[0], slots, old.shape[2], length, old.shape[4])
            new = old.new_zeros(shape) if self.zeroed else old.new_empty(shape)
            used = min(old.shape[3], length)
            new[:, :keep, :, :used] = old[:, :keep, :, :used]
            setattr(self, name, new)

    def read(self, slot: int, used: int) -> kernels.KeptPrefix:
        """A copy of slot `slot`'s first `used` positions, every layer (a shared prompt prefix)."""
        keep = torch.contiguous_format  # [layers, kv_heads, used, dim], as the kernel reads it
        keys, values = (part[:, slot, :, :used].clone(memory_format=keep) for part in (self.k, self.v))
        return kernels.KeptPrefix(keys, values)

    def fill(self, first: int, count: int, prefix: kernels.KeptPrefix) -> None:
        """Put the same prefix (from `read`) at the start of slots first..first+count-1."""
        used = prefix.length
        self.k[:, first : first + count, :, :used] = prefix.keys[:, None]
        self.v[:, first : first + count, :, :used] = prefix.values[:, None]

    def move(self, src: int, dst: int, used: int, start: int = 0) -> None:
        """Copy slot `src`'s positions start..used-1 into slot `dst` (compacting after a finish;
        `start`: the positions before it are read from elsewhere, a kept prefix)."""
        self.k[:, dst, :, start:used] = self.k[:, src, :, start:used]
        self.v[:, dst, :, start:used] = self.v[:, src, :, start:used]
