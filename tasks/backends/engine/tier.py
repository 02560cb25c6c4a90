"""Which code paths the engine runs on this machine (C kernels, oneDNN, torch), said in one line."""

from __future__ import annotations

from tasks.backends.engine.decode import SlotModel


def describe(net: SlotModel) -> str:
    """The code paths the engine runs on this machine, in one line."""
    where = f"{net.lm.device.type}, {str(net.lm.dtype).removeprefix('torch.')}"
    if net.kernel is None:
        steps = "attention and sampling in torch (no C kernels)"
    else:
        steps = "C kernels for attention, " + ("norms, " if net.norm_kernel else "") + "sampling"
    linear = net.linear
    products = "linear.c" if linear.kernel is not None else "oneDNN" if linear.packed else "F.linear"
    if linear.bf16:
        products += " (bf16 weights, bf16 KV cache)"
    elif linear.panels_bf16:
        products += " (the weights' bf16 values held in bf16)"
    fused = "; a step's layers in one C call" if net.fused is not None else ""
    return f"Decode engine ({where}): {steps}; products through {products}{fused}."
