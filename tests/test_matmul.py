"""The projections through oneDNN's packed weights give `nn.Linear`'s results (fp32, summation order
aside), with and without bias, for decode- and prefill-shaped inputs; `INSTRUCTFORGE_MATMUL=torch`
and non-fp32 models keep the plain modules."""

import types

import pytest
import torch
import torch.nn.functional as F

from tasks.backends.matmul import Projections


def cpu_model(dtype=torch.float32):
    return types.SimpleNamespace(device=torch.device("cpu"), dtype=dtype)


@pytest.fixture
def layers():
    torch.manual_seed(0)
    return [torch.nn.Linear(64, 96, bias=False), torch.nn.Linear(96, 64, bias=True)]


def test_packed_projections_give_the_modules_results(layers):
    projections = Projections(cpu_model(), layers)
    if not projections.packed:
        pytest.skip("this torch build has no oneDNN")
    assert set(projections.packed) == set(layers)
    with torch.inference_mode():
        for shape in [(5, 64), (7, 1, 64), (3, 11, 64)]:  # decode rows, and a padded prefill run
            x = torch.randn(*shape)
            out = projections(layers[1], projections(layers[0], x))
            torch.testing.assert_close(out, layers[1](layers[0](x)), rtol=1e-5, atol=1e-5)
            assert out.shape == (*shape[:-1], 64)


@pytest.mark.parametrize("matmul", ["onednn", "torch"])
def test_fused_activation_product_and_residual_add_match_the_separate_ops(layers, monkeypatch, matmul):
    """silu/times/plus: the gated MLP's pieces run inside the product (oneDNN post-ops), or as the
    separate torch ops where the weights are not packed."""
    if matmul == "torch":
        monkeypatch.setenv("INSTRUCTFORGE_MATMUL", "torch")
    projections = Projections(cpu_model(), layers)
    if matmul == "onednn" and not projections.packed:
        pytest.skip("this torch build has no oneDNN")
    first, second = layers
    with torch.inference_mode():
        for shape in [(5, 64), (7, 1, 64), (3, 11, 64)]:
            x, residual = torch.randn(*shape), torch.randn(*shape)
            gate = projections.silu(first, x)
            torch.testing.assert_close(gate, F.silu(first(x)), rtol=1e-5, atol=1e-5)
            product = projections.times(first, x, gate)
            torch.testing.assert_close(product, first(x) * gate, rtol=1e-5, atol=1e-5)
            out = projections.plus(second, product, residual)
            torch.testing.assert_close(out, residual + second(product), rtol=1e-5, atol=1e-5)
            # the post-ops themselves add no rounding of their own: bit-identical to the packed
            # product followed by the torch op
            assert torch.equal(product, projections(first, x) * gate)
            assert torch.equal(out, residual + projections(second, product))


def test_the_setting_and_other_dtypes_keep_the_plain_modules(layers, monkeypatch):
    assert not Projections(cpu_model(torch.bfloat16), layers).packed
    monkeypatch.setenv("INSTRUCTFORGE_MATMUL", "torch")
    projections = Projections(cpu_model(), layers)
    assert not projections.packed
    x = torch.randn(2, 64)
    assert torch.equal(projections(layers[0], x), layers[0](x))
