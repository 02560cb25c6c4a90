"""The model's fp32 projections through oneDNN, with each weight packed once into oneDNN's blocked
layout (what torch.compile's CPU weight freezing does), instead of torch's default `F.linear`.

Why: on CPUs not made by Intel, torch's default fp32 matmul (MKL) runs its AVX2 code. On this
machine (AMD EPYC, AVX-512 on full-width units) that reached 210-230 GFLOP/s at the decode step's
shapes, while oneDNN, which picks its code by the instructions the CPU has, reached 440-500 with the
weight packed once (a matmul that packs per call spends part of each call reordering the weight).
Same fp32 arithmetic: results differ from MKL's by summation order only (~1e-6 relative), as MKL's
own batched and one-row results do. `bench/generation.py` measures both, and the machine's peak as
the faster of the two. `INSTRUCTFORGE_MATMUL=torch` keeps `F.linear`.

Costs a second copy of the projection weights (0.5 GB for the 135M model).

oneDNN also runs an element-wise step on each output block while it is still in cache (a
"post-op"): `silu` (the gated MLP's activation), `times` (its product with the up projection) and
`plus` (the residual add). Run as separate torch ops, those passes read and wrote [rows, 1536]
tensors from memory ~120 times per decode step. `times` and `plus` give bit-identical results;
oneDNN's SiLU differs from torch's by at most an ulp or so.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def pack(weight: torch.Tensor) -> torch.Tensor:
    """An `nn.Linear` weight [out, in] reordered once into oneDNN's blocked layout."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach())


def packed_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None, then: str = "none"
) -> torch.Tensor:
    """`F.linear(x, weight, bias)` with the weight from `pack`, followed by `then` ("swish": SiLU)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, then, [], "")


def packed_linear_with(
    x: torch.Tensor, other: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, op: str
) -> torch.Tensor:
    """`F.linear(x, weight, bias) <op> other`, `op` "add" or "mul", in one pass."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, packed, bias, op)


class Projections:
    """`self(module, x)` = `module(x)` for the model's `nn.Linear` modules, through packed weights
    where oneDNN is available (CPU, fp32), else the module itself."""

    def __init__(self, model, modules: list[torch.nn.Module]) -> None:
        self.packed: dict[torch.nn.Module, torch.Tensor] = {}
        usable = (
            model.device.type == "cpu"
            and model.dtype == torch.float32
            and os.environ.get("INSTRUCTFORGE_MATMUL", "").lower() != "torch"
            and onednn_available()
        )
        if not usable:
            return
        try:
            with torch.inference_mode():
                for module in modules:
                    if isinstance(module, torch.nn.Linear):
                        self.packed[module] = pack(module.weight)
                if not all(self._agrees(module) for module in list(self.packed)[:2]):
                    raise RuntimeError("packed results differ from F.linear")
        except RuntimeError as err:  # an op this torch build lacks or refuses: the plain modules
            log.debug("oneDNN packed weights unavailable (%s): projections use F.linear", err)
            self.packed = {}

    def __call__(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        packed = self.packed.get(module)
        if packed is None:
            return module(x)
        return packed_linear(x, packed, module.bias)

    def silu(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`F.silu(module(x))`."""
        packed = self.packed.get(module)
        if packed is None:
            return F.silu(module(x))
        return packed_linear(x, packed, module.bias, "swish")

    def times(self, module: torch.nn.Module, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """`module(x) * other`."""
        packed = self.packed.get(module)
        if packed is None:
            return module(x) * other
        return packed_linear_with(x, other, packed, module.bias, "mul")

    def plus(self, module: torch.nn.Module, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """`other + module(x)` (a residual connection)."""
        packed = self.packed.get(module)
        if packed is None:
            return other + module(x)
        return packed_linear_with(x, other, packed, module.bias, "add")

    def _agrees(self, module: torch.nn.Module) -> bool:
        x = torch.randn(3, module.in_features, generator=torch.Generator().manual_seed(0))
        return torch.allclose(self(module, x), module(x), rtol=1e-4, atol=1e-4)
