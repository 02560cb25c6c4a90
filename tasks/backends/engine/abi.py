"""The C library's functions as Python calls them: one ctypes signature (result, arguments) per
function of `csrc/kernels.h`, in the header's order. `bind` sets them on a loaded library; nothing
else in the engine declares a signature. tests/engine/test_abi.py parses the header and checks this
table against it, so a signature changed on one side only fails there, not as a crash at run time.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

PTR = ctypes.c_void_p  # any pointer: tensors are passed as `data_ptr()`, absent ones as None
I64 = ctypes.c_int64
INT = ctypes.c_int
F32 = ctypes.c_float


class Signature(NamedTuple):
    result: type | None  # None: void
    arguments: list[type]


S = Signature  # short, for the table below
SIGNATURES: dict[str, Signature] = {
    # q, k, v, new_k, new_v, len, out, hot_k, hot_v, hot_len; layer, n, kv_heads, groups, dim,
    # slot_stride, head_stride, max_len; scale, bf16, threads
    "decode_attention": S(INT, [PTR] * 10 + [I64] * 8 + [F32, INT, INT]),
    # x, weight, out; rows, width; eps, threads
    "rms_norm": S(None, [PTR] * 3 + [I64] * 2 + [F32, INT]),
    # q, k, cos, sin; rows, heads, kv_heads, dim; threads
    "rope": S(INT, [PTR] * 4 + [I64] * 4 + [INT]),
    # n, k
    "linear_packed_floats": S(I64, [I64] * 2),
    # w, out; n, k
    "linear_pack": S(None, [PTR] * 2 + [I64] * 2),
    "linear_available": S(INT, []),
    # x, packed, bias, other, out; m, k, n; op, threads; then; then_n, then_k; bf16
    "linear": S(INT, [PTR] * 5 + [I64] * 3 + [INT] * 2 + [PTR] + [I64] * 2 + [INT]),
    # logits; n, vocab; temperature, top_p, draws; count; out; threads
    "sample_rows": S(INT, [PTR] + [I64] * 2 + [PTR] * 3 + [I64, PTR, INT]),
    # logits; n, vocab; out; threads
    "argmax_rows": S(None, [PTR] + [I64] * 2 + [PTR, INT]),
    # x; n, layers; table, head; vocab, hidden, heads, kv_heads, dim, inter; eps; cos, sin, len,
    # hot_k, hot_v, hot_len; slot_stride, head_stride, max_len; scale, bf16, threads
    "decode_layers": S(
        INT,
        [PTR] + [I64] * 2 + [PTR] * 2 + [I64] * 6 + [F32] + [PTR] * 6 + [I64] * 3 + [F32, INT, INT],
    ),
}


def bind(library: ctypes.CDLL) -> ctypes.CDLL:
    """`library` with every function's result and argument types set (ctypes checks each call's
    argument count and converts each argument to its C type)."""
    for name, (result, arguments) in SIGNATURES.items():
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments
    return library
