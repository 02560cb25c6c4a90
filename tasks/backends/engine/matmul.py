"""The model's fp32 projections with each weight packed once: through the C kernel (`linear.c`) where
the CPU has AVX-512, else through oneDNN's blocked layout (what torch.compile's CPU weight freezing
does), instead of torch's default `F.linear`.

Why: on CPUs not made by Intel, torch's default fp32 matmul (MKL) runs its AVX2 code, about half
of what an AVX-512 machine's cores do; oneDNN with packed weights gets most of it, and the C kernel
more at the decode step's shapes (it reads each weight from memory once per product and prefetches
the next panel: linear.c says more). Same fp32 arithmetic: results differ from MKL's by summation
order only (~1e-6 relative), as MKL's own batched and one-row results do. `bench/generation.py`
measures all three, and the machine's peak as the fastest (docs/engine.md has the figures).
`INSTRUCTFORGE_MATMUL=onednn` skips the kernel; `INSTRUCTFORGE_MATMUL=torch` keeps `F.linear`.
oneDNN's packed ops are private torch API, used only where `private_ops` has checked them.

Costs a second copy of the projection weights (0.5 GB for the 135M model).

Both also run an element-wise step on each output block while it is still in cache: `silu` (the
gated MLP's activation), `times` (its product with the up projection) and `plus` (the residual
add). Run as separate torch ops, those passes read and wrote [rows, 1536] tensors from memory
four times a layer on every decode step. `times` and `plus` give bit-identical results; the SiLU differs from
torch's by at most an ulp or so.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from tasks.backends.engine import kernels, private_ops

log = logging.getLogger(__name__)


def onednn_available() -> bool:
    """Whether the private oneDNN ops below may run here (`private_ops` says when)."""
    return private_ops.onednn_linear()


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
    on CPU in fp32: the C kernel (`linear.c`) where the CPU has AVX-512, else oneDNN where torch has
    it, else the module itself. `INSTRUCTFORGE_MATMUL`: "onednn" skips the kernel, "torch" both."""

    def __init__(self, model, modules: list[torch.nn.Module]) -> None:
        self.packed: dict[torch.nn.Module, torch.Tensor] = {}
        self.kernel = None  # the C library, when it does the products
        self.following: dict[torch.nn.Module, kernels.NextWeights] = {}
        choice = os.environ.get("INSTRUCTFORGE_MATMUL", "").lower()
        if model.device.type != "cpu" or model.dtype != torch.float32 or choice == "torch":
            return
        lib = kernels.kernel() if choice != "onednn" else None
        linears = [module for module in modules if isinstance(module, torch.nn.Linear)]
        try:
            with torch.inference_mode():
                if lib is not None and lib.linear_available():
                    self.kernel = lib
                    self.packed = {module: kernels.linear_pack(lib, module.weight) for module in linears}
                elif onednn_available():
                    self.packed = {module: pack(module.weight) for module in linears}
                if not all(self._agrees(module) for module in list(self.packed)[:2]):
                    raise RuntimeError("packed results differ from F.linear")
        except RuntimeError as err:  # an op this torch build lacks or refuses: the plain modules
            log.debug("packed weights unavailable (%s): projections use F.linear", err)
            self.packed, self.kernel = {}, None
        # `modules` come in the order a forward pass runs them: the kernel prefetches the next
        # product's first weights while it finishes the current one
        order = [module for module in linears if module in self.packed]
        self.following = {
            module: kernels.NextWeights(self.packed[after], after.out_features, after.in_features)
            for module, after in zip(order, order[1:])
        }

    def _run(self, module, x, op: str = "none", other=None, out=None) -> torch.Tensor | None:
        """The packed product with `op` ("none", "swish", "mul", "add"), or None if not packed."""
        packed = self.packed.get(module)
        if packed is None:
            return None
        if self.kernel is not None:
            then = self.following.get(module)
            result = kernels.linear(
                self.kernel, x, packed, module.out_features, module.bias, op, other, out, then
            )
            return result.view(*x.shape[:-1], module.out_features) if out is None else result
        if other is None:
            result = packed_linear(x, packed, module.bias, op)
        else:
            result = packed_linear_with(x, other, packed, module.bias, op)
        if out is not None:
            out.copy_(result)
            return out
        return result

    def __call__(
        self, module: torch.nn.Module, x: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`module(x)`, written into `out` ([rows, out features]) where given."""
        result = self._run(module, x, out=out)
        if result is not None:
            return result
        if out is not None:
            return torch.matmul(x.reshape(out.shape[0], -1), module.weight.t(), out=out)
        return module(x)

    def silu(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`F.silu(module(x))`."""
        result = self._run(module, x, "swish")
        return F.silu(module(x)) if result is None else result

    def times(self, module: torch.nn.Module, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """`module(x) * other`."""
        result = self._run(module, x, "mul", other)
        return module(x) * other if result is None else result

    def plus(self, module: torch.nn.Module, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """`other + module(x)` (a residual connection)."""
        result = self._run(module, x, "add", other)
        return other + module(x) if result is None else result

    def _agrees(self, module: torch.nn.Module) -> bool:
        x = torch.randn(3, module.in_features, generator=torch.Generator().manual_seed(0))
        return torch.allclose(self(module, x), module(x), rtol=1e-4, atol=1e-4)
