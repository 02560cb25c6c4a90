"""The engine's C kernels, built once with the system C compiler into one library and loaded
through ctypes: `csrc/decode_attention.c`, `decode_norms.c`, `linear.c`, `sample.c` and
`decode_layers.c`, whose one interface is `csrc/kernels.h` (the ctypes signatures: `abi.py`).
Without a compiler, decoding runs the same layers in torch (the projections through oneDNN or
`F.linear`, `matmul.py`) and sampling the same choice in torch ops (`sampling.py`).

Why: the decode step's attention, written as torch matmuls, is a batch of 3-row products over each
slot's keys padded to the longest sequence, where the kernel reads each sequence's own positions
once. The RMSNorms and the rotary embedding were 18 small torch ops a layer, each its own pass and
parallel region (decode_norms.c). The projections' products waited on memory in oneDNN (linear.c
says more). Nucleus sampling was nine torch passes over every row's logits (sample.c). What each
gained, with the command that measures it: docs/engine.md.

The library is cached by source, headers, flags and CPU in the build directory the caller passes
(the transformers backend passes `$INSTRUCTFORGE_CACHE/kernels`), so `-march=native` code never runs
on another kind of CPU; given none, it is built in a temporary directory for this process only.
`INSTRUCTFORGE_ATTENTION=torch` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.backends.engine import abi

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = tuple(
    CSRC / name
    for name in ("decode_attention.c", "decode_norms.c", "decode_layers.c", "linear.c", "sample.c")
)
HEADERS = (CSRC / "kernels.h", CSRC / "exp16.h")  # included by the sources: part of the cache key
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared"]
_lock = threading.Lock()
_kernel: ctypes.CDLL | None | bool = False  # False: not tried yet; None: unavailable


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "model name", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(build_dir: Path | None) -> ctypes.CDLL | None:
    """The library from `build_dir` (compiled into it first if it is not there yet), or compiled
    into a temporary directory when `build_dir` is None; None without a working compiler."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if os.environ.get("INSTRUCTFORGE_ATTENTION", "").lower() == "torch" or compiler is None:
        return None
    if build_dir is None:
        with tempfile.TemporaryDirectory(prefix="instructforge-kernels-") as tmp:
            # loaded before the directory goes: the mapping outlives the file
            return _build_into(Path(tmp), compiler)
    return _build_into(Path(build_dir), compiler)


def _build_into(build_dir: Path, compiler: str) -> ctypes.CDLL | None:
    source = b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    key = hashlib.sha256(source + " ".join(_FLAGS).encode() + _cpu_signature().encode()).hexdigest()[:16]
    library = build_dir / f"decode-{platform.machine()}-{key}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
            built = Path(tmp) / library.name
            # OpenMP when the compiler has it (threads as torch's); otherwise one thread
            for openmp in (["-fopenmp"], []):
                command = [compiler, *_FLAGS, *openmp, *map(str, SOURCES), "-o", str(built), "-lm"]
                if _compiles(command):
                    break
            else:
                log.info("No working C compiler (%s): decoding runs in torch.", compiler)
                return None
            os.replace(built, library)  # atomic: a concurrent process sees no half-written file
    return load(library)


def load(library: Path) -> ctypes.CDLL:
    """The library at `library`, its functions typed as `abi.SIGNATURES` says."""
    return abi.bind(ctypes.CDLL(str(library)))


def _compiles(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def kernel(build_dir: Path | None = None) -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be built. The first call builds (or loads)
    them, cached in `build_dir`; later calls return that library whatever they pass."""
    global _kernel
    with _lock:
        if _kernel is False:
            _kernel = _build(build_dir)
        return _kernel


def use(library: ctypes.CDLL) -> None:
    """From now on `kernel()` returns `library`: engines made after this call run on it (bench/kernel_ab.py
    runs whole generations on two builds in turn)."""
    global _kernel
    with _lock:
        _kernel = library


@dataclass
class KeptPrefix:
    """A shared prompt prefix's keys and values, every layer, kept once by the engine: each
    [layers, kv_heads, positions, dim], contiguous (as the kernel reads them), of the cache's dtype."""

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def length(self) -> int:
        return self.keys.shape[2]


class Hot:
    """Shared prompt prefixes held once (the engine's kept prefix keys and values) for a decode
    step: row i's first `lengths[i]` positions are those of `prefixes[i]` (None: none), read from
    the tensors at addresses `keys[i]`, `values[i]`. The tensors must stay alive while the step
    runs."""

    def __init__(self, prefixes: list[KeptPrefix | None]) -> None:
        def column(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64)

        self.keys = column([p.keys.data_ptr() if p else 0 for p in prefixes])
        self.values = column([p.values.data_ptr() if p else 0 for p in prefixes])
        self.lengths = column([p.length if p else 0 for p in prefixes])


def decode_attention(
    lib, q, k, v, keys, values, lengths, scale: float, hot: Hot | None = None, layer: int = 0, longest=None
) -> torch.Tensor:
    """Attention of one new token per sequence: `q` [n, heads, 1, dim]; its key and value `k`, `v`
    [n, kv_heads, 1, dim] are stored at position lengths[i] - 1 of `keys`/`values`, layer `layer`
    of the slot cache, [slots, kv_heads, length, dim] (contiguous, fp32 or bf16: then rounded to
    it as torch rounds, and `hot`'s prefix is bf16 too), and sequence i attends to its first
    `lengths[i]` positions (int64; `longest` their maximum, if known), the first ones read from
    `hot` where given. Returns [n, heads, 1, dim], fp32."""
    n, heads, _, dim = q.shape
    kv_heads = keys.shape[1]
    if keys.dtype not in (torch.float32, torch.bfloat16) or values.dtype != keys.dtype:
        raise TypeError(f"decode attention reads an fp32 or bf16 cache, not {keys.dtype}/{values.dtype}")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    lengths = lengths.to(torch.int64).contiguous()
    out = torch.empty_like(q)
    failed = lib.decode_attention(
        q.data_ptr(),
        keys.data_ptr(),
        values.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        lengths.data_ptr(),
        out.data_ptr(),
        hot.keys.data_ptr() if hot else None,
        hot.values.data_ptr() if hot else None,
        hot.lengths.data_ptr() if hot else None,
        layer,
        n,
        kv_heads,
        heads // kv_heads,
        dim,
        keys.stride(0),
        keys.stride(1),
        int(lengths.max()) if longest is None else longest,
        scale,
        keys.dtype == torch.bfloat16,
        torch.get_num_threads(),
    )
    if failed:
        raise MemoryError("decode attention: out of memory for its score buffer")
    return out


def rms_norm(lib, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's forward, `weight * (x * rsqrt(mean(x^2) + eps))` over the last dimension,
    of fp32 `x` (any leading shape)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    width = x.shape[-1]
    lib.rms_norm(
        x.data_ptr(),
        weight.data_ptr(),
        out.data_ptr(),
        x.numel() // width,
        width,
        eps,
        torch.get_num_threads(),
    )
    return out


def rope_(lib, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    """transformers' `apply_rotary_pos_emb` in place, for one position per row: `q` [n, heads, 1,
    dim] and `k` [n, kv_heads, 1, dim] contiguous, `cos`/`sin` [n, 1, dim]. False (nothing done)
    where the shapes do not fit; the caller then runs the torch version."""
    n, heads, steps, dim = q.shape
    if steps != 1 or not (q.is_contiguous() and k.is_contiguous()) or cos.shape != (n, 1, dim):
        return False
    cos, sin = cos.contiguous(), sin.contiguous()
    threads = torch.get_num_threads()
    return (
        lib.rope(
            q.data_ptr(), k.data_ptr(), cos.data_ptr(), sin.data_ptr(), n, heads, k.shape[1], dim, threads
        )
        == 0
    )


# linear.c's element-wise steps after the product
LINEAR_OPS = {"none": 0, "swish": 1, "mul": 2, "add": 3}


@dataclass(frozen=True)
class NextWeights:
    """The product that runs after this one: its packed weight (from `linear_pack`), out and in
    features. `linear` prefetches its first panels while it finishes the current product."""

    packed: torch.Tensor
    out_features: int
    in_features: int


def bf16_values(weight: torch.Tensor) -> bool:
    """Whether every value of fp32 `weight` is a bfloat16 value (its low 16 bits zero), as in a
    checkpoint published in bf16 and loaded in fp32: then it is held in bf16 exactly."""
    bits = weight.detach().contiguous().view(torch.int32).view(-1)
    return not any(bool((part & 0xFFFF).any()) for part in bits.split(1 << 22))  # 16 MB at a time


def linear_pack(lib, weight: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """An fp32 `nn.Linear` weight [out, in] in linear.c's panels (a flat tensor); `bf16`: the panels
    in bfloat16, half the bytes, for a weight of bf16 values (`bf16_values`: the same values)."""
    n, k = weight.shape
    weight = weight.detach().contiguous()
    packed = torch.empty(lib.linear_packed_floats(n, k), dtype=torch.float32)
    lib.linear_pack(weight.data_ptr(), packed.data_ptr(), n, k)
    return packed.to(torch.bfloat16) if bf16 else packed


def linear_unpack(lib, packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The fp32 [n, k] weight `linear_pack` made `packed` from, exactly (packing only moves values,
    and a bf16 panel holds a weight of bf16 values)."""
    panel = lib.linear_packed_floats(1, 1)  # linear.c's panel width: one input, one padded panel
    return packed.view(-1, k, panel).transpose(1, 2).reshape(-1, k)[:n].to(torch.float32, copy=True)


def linear(
    lib,
    x: torch.Tensor,
    packed: torch.Tensor,
    n: int,
    bias: torch.Tensor | None = None,
    op: str = "none",
    other: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    then: NextWeights | None = None,
) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for fp32 `x` [..., in], the weight from `linear_pack` (`n`: its
    out features), then `op`: "swish" (SiLU), "mul" or "add" `other` (x's shape but [..., n]).
    Written into `out` ([rows, n], contiguous) where given; `then`: the next product, its panels
    of `packed`'s dtype."""
    bf16 = packed.dtype == torch.bfloat16
    if then is not None and then.packed.dtype != packed.dtype:
        raise TypeError(f"the next product's panels are {then.packed.dtype}, this one's {packed.dtype}")
    k = x.shape[-1]
    x = x.reshape(-1, k).contiguous()
    m = x.shape[0]
    if out is None:
        out = torch.empty(m, n, dtype=torch.float32)
    if other is not None:
        other = other.reshape(m, n).contiguous()
    failed = lib.linear(
        x.data_ptr(),
        packed.data_ptr(),
        bias.data_ptr() if bias is not None else None,
        other.data_ptr() if other is not None else None,
        out.data_ptr(),
        m,
        k,
        n,
        LINEAR_OPS[op],
        torch.get_num_threads(),
        then.packed.data_ptr() if then else None,
        then.out_features if then else 0,
        then.in_features if then else 0,
        bf16,
    )
    if failed < 0:  # the portable build, which `linear_available` reports
        raise RuntimeError("linear.c was built without AVX-512: use oneDNN or F.linear")
    if failed:
        raise MemoryError("linear: out of memory for a panel's widened bf16 values")
    return out
