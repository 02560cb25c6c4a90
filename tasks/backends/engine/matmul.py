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

A checkpoint published in bf16 loads as fp32 weights of bf16 values: the C kernel's panels then hold
them in bf16, exactly (half the bytes a step reads; the same results), unless any value does not fit
or `INSTRUCTFORGE_MATMUL=fp32-panels` (docs/engine.md).

With the C kernel, each projection's own fp32 weight is freed once packed (the panels give it back
exactly where transformers' `generate` runs the same model: `Projections.module_weights`); oneDNN's
packed weights are a second copy (0.5 GB for the 135M model). The vocabulary head keeps its own.

`weights="bf16"` (`INSTRUCTFORGE_DTYPE=bf16`, the backend's `dtype="bf16"`): the projections'
weights are packed in bfloat16 for oneDNN and the fp32 ones freed (the vocabulary head's stay: it
is often the embedding too). Each product takes its input rounded to bf16, accumulates in fp32 and
rounds its output to bf16, which comes back as fp32; norms, attention's arithmetic, residual adds
and the SiLU stay fp32, and the KV cache holds bf16 keys and values (`SlotModel.kv_dtype`). Half
the bytes read per token, and on CPUs with AVX-512 BF16 or AMX, bf16 products run several times
faster than fp32 ones. Only on such CPUs: elsewhere oneDNN emulates
bf16, slower than fp32, so `bf16_refusal` says why it is refused.

Both also run an element-wise step on each output block while it is still in cache: `silu` (the
gated MLP's activation), `times` (its product with the up projection) and `plus` (the residual
add). Run as separate torch ops, those passes read and wrote [rows, 1536] tensors from memory
four times a layer on every decode step. `times` and `plus` give bit-identical results; the SiLU differs from
torch's by at most an ulp or so.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading

import torch
import torch.nn.functional as F

from tasks.backends.engine import kernels, private_ops

log = logging.getLogger(__name__)


WEIGHTS = ("fp32", "bf16")  # the projections' precisions


def onednn_available() -> bool:
    """Whether the private oneDNN ops below may run here (`private_ops` says when)."""
    return private_ops.onednn_linear()


def cpu_flags() -> set[str]:
    """This CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(
                (set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set()
            )
    except OSError:
        return set()


def bf16_refusal() -> str | None:
    """Why bf16 weights cannot be used here (None: they can): it needs native bf16 arithmetic
    (AVX-512 BF16 or AMX) and oneDNN in this torch build."""
    flags = cpu_flags()
    if not flags & {"avx512_bf16", "amx_bf16"}:
        has = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither AVX-512 nor AVX2"
        return (
            f"INSTRUCTFORGE_DTYPE=bf16 needs a CPU with AVX-512 BF16 or AMX instructions; this one has {has} "
            "only, where bf16 would run slower than fp32. Unset it (fp32 is the default)."
        )
    if not onednn_available():
        return (
            "INSTRUCTFORGE_DTYPE=bf16 needs torch built with oneDNN (mkldnn); this build has none. Unset it."
        )
    return None


def kernel_products(build_dir=None) -> bool:
    """Whether fp32 products run in the C kernel here: built (or loaded) now, cached in
    `build_dir` (kernels.kernel), and not turned off by `INSTRUCTFORGE_MATMUL`."""
    if os.environ.get("INSTRUCTFORGE_MATMUL", "").lower() in ("onednn", "torch"):
        return False
    lib = kernels.kernel(build_dir)
    return lib is not None and bool(lib.linear_available())


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


def _drop_weight(module: torch.nn.Module) -> None:
    module.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)


class Projections:
    """`self(module, x)` = `module(x)` for the model's `nn.Linear` modules, through packed weights
    on CPU in fp32: the C kernel (`linear.c`) where the CPU has AVX-512, else oneDNN where torch has
    it, else the module itself. `INSTRUCTFORGE_MATMUL`: "onednn" skips the kernel, "torch" both."""

    def __init__(
        self, model, modules: list[torch.nn.Module], weights: str = "fp32", take_weights: bool = False
    ) -> None:
        """`take_weights`: the C kernel's panels replace the modules' own fp32 weights (freed once
        packed, lent back by `module_weights`); the vocabulary head keeps its own."""
        self.packed: dict[torch.nn.Module, torch.Tensor] = {}
        self.kernel = None  # the C library, when it does the products
        self.panels_bf16 = False  # the kernel's panels hold the weights' (bf16) values in bf16
        self.following: dict[torch.nn.Module, kernels.NextWeights] = {}
        self.bf16 = weights == "bf16" and model.device.type == "cpu"  # on a GPU the model is bf16
        self.biases: dict[torch.nn.Module, torch.Tensor] = {}  # bf16 mode: each bias, fp32
        self.freed: list[torch.nn.Module] = []  # fp32 modules whose own weight went (`module_weights`)
        self._lent = 0  # callers inside `module_weights`
        self._lending = threading.Lock()
        choice = os.environ.get("INSTRUCTFORGE_MATMUL", "").lower()
        if self.bf16:
            self._pack_bf16(model, modules)
            return
        if model.device.type != "cpu" or model.dtype != torch.float32 or choice == "torch":
            return
        linears = [module for module in modules if isinstance(module, torch.nn.Linear)]
        head = model.get_output_embeddings() if take_weights else None
        try:
            with torch.inference_mode():
                if kernel_products():
                    self.kernel = kernels.kernel()
                    self.panels_bf16 = choice != "fp32-panels" and all(
                        kernels.bf16_values(module.weight) for module in linears
                    )
                    packer = functools.partial(kernels.linear_pack, self.kernel, bf16=self.panels_bf16)
                elif onednn_available():
                    packer = pack
                else:
                    packer = None
                for i, module in enumerate(linears if packer is not None else ()):
                    self.packed[module] = packer(module.weight)
                    if i < 2 and not self._agrees(module):
                        raise RuntimeError("packed results differ from F.linear")
                    # linear.c's panels give the weight back exactly (`module_weights`): the
                    # module's copy goes as soon as they are made, so loading never holds two
                    # copies of more than one weight. Not the head's: often the input embedding.
                    if take_weights and self.kernel is not None and module is not head:
                        self._free(module)
        except RuntimeError as err:  # an op this torch build lacks or refuses: the plain modules
            log.debug("packed weights unavailable (%s): projections use F.linear", err)
            self._restore()
            self.packed, self.kernel, self.freed, self.panels_bf16 = {}, None, [], False
        # `modules` come in the order a forward pass runs them: the kernel prefetches the next
        # product's first weights while it finishes the current one
        order = [module for module in linears if module in self.packed]
        self.following = {
            module: kernels.NextWeights(self.packed[after], after.out_features, after.in_features)
            for module, after in zip(order, order[1:])
        }

    def _free(self, module: torch.nn.Module) -> None:
        _drop_weight(module)
        self.freed.append(module)

    def _restore(self) -> None:
        for module in self.freed:
            n, k = module.out_features, module.in_features
            weight = kernels.linear_unpack(self.kernel, self.packed[module], n, k)
            module.weight = torch.nn.Parameter(weight, requires_grad=False)

    @contextlib.contextmanager
    def module_weights(self):
        """The fp32 modules' own weights for the duration (rebuilt exactly from the panels, then
        freed again), for code that runs the model's modules rather than the engine: transformers'
        `generate` on the same model. Nested and concurrent uses share one copy."""
        with self._lending:
            if self._lent == 0:
                with torch.inference_mode():
                    self._restore()
            self._lent += 1
        try:
            yield
        finally:
            with self._lending:
                self._lent -= 1
                if self._lent == 0:
                    for module in self.freed:
                        _drop_weight(module)

    def _pack_bf16(self, model, modules: list[torch.nn.Module]) -> None:
        """Every projection's weight packed in bf16 for oneDNN; the layers' fp32 weights freed."""
        refusal = bf16_refusal()
        if refusal:
            raise ValueError(refusal)
        head = model.get_output_embeddings()
        with torch.inference_mode():
            for module in modules:
                if not isinstance(module, torch.nn.Linear):
                    continue
                self.packed[module] = pack(module.weight.detach().to(torch.bfloat16))
                if module.bias is not None:
                    self.biases[module] = module.bias.detach().float()
                if not self._agrees_bf16(module):
                    raise RuntimeError(f"bf16 products differ from F.linear on {module}")
                if module is not head:  # subtle: the head's weight is often the input embedding too
                    _drop_weight(module)

    def _run_bf16(self, module, x, op: str, other, out) -> torch.Tensor:
        """The bf16 product (see the module docstring), then `op` in fp32."""
        shape = (*x.shape[:-1], module.out_features)
        y = packed_linear(x.reshape(-1, x.shape[-1]).to(torch.bfloat16), self.packed[module])
        y = y.float().view(shape) if out is None else out.copy_(y.view(out.shape))
        if module in self.biases:
            y += self.biases[module]
        if op == "swish":
            return F.silu(y, inplace=True)
        if op == "mul":
            return y.mul_(other)
        if op == "add":
            return y.add_(other)
        return y

    def _run(self, module, x, op: str = "none", other=None, out=None) -> torch.Tensor | None:
        """The packed product with `op` ("none", "swish", "mul", "add"), or None if not packed."""
        packed = self.packed.get(module)
        if packed is None:
            return None
        if self.bf16:
            return self._run_bf16(module, x, op, other, out)
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

    def _agrees_bf16(self, module: torch.nn.Module) -> bool:
        """Within bf16's rounding of F.linear: its inputs and outputs carry 8 significant bits, so
        the result is off by ~0.4% (relative to its norm); a wrong layout is off by ~100%."""
        x = torch.randn(3, module.in_features, generator=torch.Generator().manual_seed(0))
        want = module(x)
        return float((self(module, x) - want).norm()) <= 0.02 * float(want.norm()) + 1e-6
