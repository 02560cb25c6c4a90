"""The projections through packed weights (the C kernel, linear.c, or oneDNN) give `nn.Linear`'s
results (fp32, summation order aside), with and without bias, for decode- and prefill-shaped
inputs; a row's result does not depend on the other rows or the thread count; the SiLU step holds
over the whole float range; `INSTRUCTFORGE_MATMUL=torch` and non-fp32 models keep the plain
modules, a CPU without AVX-512 gets oneDNN, and a failed check gives back the weights packing took."""

import types

import pytest
import torch
import torch.nn.functional as F

from tasks.backends.engine import kernels
from tasks.backends.engine.matmul import Projections

WAYS = ["kernel", "onednn"]  # the packed products: INSTRUCTFORGE_MATMUL="" picks the kernel first


@pytest.fixture
def use(monkeypatch):
    """Projections through `way`, or a skip where this machine has no such way."""

    def projections(way: str, layers) -> Projections:
        monkeypatch.setenv("INSTRUCTFORGE_MATMUL", "" if way == "kernel" else way)
        made = Projections(cpu_model(), layers)
        if way == "kernel" and made.kernel is None:
            pytest.skip("no C compiler or no AVX-512 here: the projections use oneDNN")
        if way == "onednn" and (made.kernel is not None or not made.packed):
            pytest.skip("this torch build has no oneDNN")
        return made

    return projections


def cpu_model(dtype=torch.float32):
    return types.SimpleNamespace(device=torch.device("cpu"), dtype=dtype)


@pytest.fixture
def layers():
    torch.manual_seed(0)
    return [torch.nn.Linear(64, 96, bias=False), torch.nn.Linear(96, 64, bias=True)]


@pytest.mark.parametrize("way", WAYS)
def test_packed_projections_give_the_modules_results(layers, use, way):
    projections = use(way, layers)
    assert set(projections.packed) == set(layers)
    with torch.inference_mode():
        for shape in [(5, 64), (7, 1, 64), (3, 11, 64)]:  # decode rows, and a padded prefill run
            x = torch.randn(*shape)
            out = projections(layers[1], projections(layers[0], x))
            torch.testing.assert_close(out, layers[1](layers[0](x)), rtol=1e-5, atol=1e-5)
            assert out.shape == (*shape[:-1], 64)


@pytest.mark.parametrize("matmul", [*WAYS, "torch"])
def test_fused_activation_product_and_residual_add_match_the_separate_ops(layers, use, matmul):
    """silu/times/plus: the gated MLP's pieces run inside the product (the kernel's last step, or
    oneDNN post-ops), or as the separate torch ops where the weights are not packed."""
    projections = use(matmul, layers)
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


@pytest.mark.parametrize(
    "rows,features,out_features",
    [
        (1, 64, 96),  # one partial panel of 64 columns
        (13, 576, 192),  # few panels: rows split between threads, blocks of 6 rows and a partial one
        (84, 576, 576),
        (7, 1536, 1100),  # 18 panels: split by panel alone, the last one partial
        (300, 33, 64),  # an odd inner size
        (13, 2500, 130),  # an inner size in slices (linear.c's `slice`), rows split between threads
        (40, 4864, 896),  # Qwen2.5-0.5B's down projection: 4 slices, 14 panels
    ],
)
def test_kernel_rows_are_independent_of_the_batch_and_the_threads(use, rows, features, out_features):
    """Each output is one sum over the inner size in order, so a row's result is the same bits
    alone, in any batch and on any number of threads: greedy outputs cannot depend on which other
    rows are decoding (the engine's identity with one prompt at a time rests on it)."""
    torch.manual_seed(rows)
    layer = torch.nn.Linear(features, out_features, bias=True)
    projections = use("kernel", [layer])
    x = torch.randn(rows, features)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        together = projections(layer, x)
        torch.testing.assert_close(together, layer(x), rtol=1e-5, atol=1e-5)
        try:
            torch.set_num_threads(1)
            alone = torch.cat([projections(layer, row[None]) for row in x])
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(together, alone)


@pytest.mark.parametrize("out_features", [200, 2000])  # few panels (rows split too), many panels
def test_kernel_threads_taking_each_others_panels_change_no_result(use, out_features):
    """Each thread works through its own run of panels and then takes the last ones of another's
    (linear.c), so which thread computes a panel varies from call to call: the bits must not. More
    threads than cores (some of them held back by the system) make taking more frequent."""
    torch.manual_seed(out_features)
    layer = torch.nn.Linear(300, out_features, bias=True)
    projections = use("kernel", [layer])
    x = torch.randn(50, 300)
    with torch.inference_mode():
        want = kernels.linear(projections.kernel, x, projections.packed[layer], out_features, layer.bias)
        torch.testing.assert_close(want, layer(x), rtol=1e-5, atol=1e-5)
        for threads in [1, 3, 7, 16] * 3:
            got = torch.full_like(want, float("nan"))
            failed = projections.kernel.linear(
                x.data_ptr(), projections.packed[layer].data_ptr(), layer.bias.data_ptr(), None,
                got.data_ptr(), 50, 300, out_features, 0, threads, None, 0, 0, projections.panels_bf16,
            )  # fmt: skip
            assert failed == 0 and torch.equal(got, want), threads


def test_kernel_silu_holds_over_the_whole_range(use):
    """The SiLU step computes exp itself: checked against torch's from -120 to 120, where exp(-v)
    overflows or vanishes, to a few ulp."""
    layer = torch.nn.Linear(1, 64, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    projections = use("kernel", [layer])
    v = torch.cat([torch.linspace(-120, 120, 4001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.7, -88.8])])
    with torch.inference_mode():
        got = projections.silu(layer, v[:, None])  # every column is v
        expected = F.silu(v)[:, None].expand_as(got)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=4e-7, atol=1e-30)


def test_kernel_writes_into_a_given_output(use):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 200, bias=False)
    projections = use("kernel", [layer])
    x, out = torch.randn(5, 64), torch.full((5, 200), float("nan"))
    with torch.inference_mode():
        assert projections(layer, x, out=out) is out
        torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)


def test_a_cpu_without_avx512_gets_onednn(layers, monkeypatch, plain_kernel):
    """The kernel library built without AVX-512 says so, and the projections take oneDNN."""
    assert plain_kernel.linear_available() == 0
    monkeypatch.setattr(kernels, "kernel", lambda build_dir=None: plain_kernel)
    projections = Projections(cpu_model(), layers)
    assert projections.kernel is None
    x = torch.randn(3, 64)
    with torch.inference_mode():
        torch.testing.assert_close(projections(layers[0], x), layers[0](x), rtol=1e-5, atol=1e-5)


def test_a_kernel_failing_its_check_gives_back_the_weights_it_took(layers, use, monkeypatch):
    """Packing frees each module's weight as it goes; where the second product then disagrees
    with F.linear, the modules get their exact weights back and run themselves."""
    use("kernel", layers)  # skips where there is no kernel
    want = [layer.weight.detach().clone() for layer in layers]
    real = kernels.linear_pack
    monkeypatch.setattr(
        kernels, "linear_pack", lambda lib, w, bf16=False: real(lib, w if w.shape[0] == 96 else -w, bf16)
    )
    model = types.SimpleNamespace(**vars(cpu_model()), get_output_embeddings=lambda: None)
    projections = Projections(model, layers, take_weights=True)
    assert projections.kernel is None and not projections.packed and not projections.freed
    assert all(torch.equal(layer.weight, w) for layer, w in zip(layers, want))
    x = torch.randn(3, 64)
    with torch.inference_mode():
        torch.testing.assert_close(projections(layers[0], x), layers[0](x), rtol=0, atol=0)


def test_kernel_products_know_the_one_that_follows(use):
    """Given in the order a forward pass runs them, each packed product names the next one (the
    kernel prefetches its first weights), and prefetching changes no result."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 96), torch.nn.Linear(96, 640), torch.nn.Linear(640, 64)]
    projections = use("kernel", layers)
    following = [projections.following.get(layer) for layer in layers]
    assert [after.packed if after else None for after in following] == [
        projections.packed[layers[1]],
        projections.packed[layers[2]],
        None,
    ]
    assert (following[1].out_features, following[1].in_features) == (64, 640)
    x = torch.randn(9, 64)
    with torch.inference_mode():
        got = projections(layers[2], projections(layers[1], projections(layers[0], x)))
        torch.testing.assert_close(got, layers[2](layers[1](layers[0](x))), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features", [1024, 1025, 3000, 8960])
@pytest.mark.parametrize("op", ["none", "swish", "mul", "add"])
def test_kernel_in_slices_of_the_inner_size_gives_the_modules_results(use, features, op):
    """A long inner size runs in slices (the rows' running sums kept between them); the result is
    the product's, with the element-wise step after the last slice only, also where the output is
    the residual it adds to (decode_layers.c adds the residual in place)."""
    torch.manual_seed(features)
    layer = torch.nn.Linear(features, 70, bias=True)
    projections = use("kernel", [layer])
    x, other = torch.randn(11, features), torch.randn(11, 70)
    want = {"none": lambda y: y, "swish": F.silu, "mul": lambda y: y * other, "add": lambda y: other + y}[op]
    with torch.inference_mode():
        got = kernels.linear(projections.kernel, x, projections.packed[layer], 70, layer.bias, op, other)
        torch.testing.assert_close(got, want(layer(x)), rtol=1e-4, atol=1e-4)
        if op == "add":
            residual = other.clone()  # out is other, as a decode step's residual add
            failed = projections.kernel.linear(
                x.data_ptr(), projections.packed[layer].data_ptr(), layer.bias.data_ptr(),
                residual.data_ptr(), residual.data_ptr(), 11, features, 70, 3, 2, None, 0, 0,
                projections.panels_bf16,
            )  # fmt: skip
            assert failed == 0 and torch.equal(residual, got)


@pytest.mark.parametrize("features, out_features, rows", [(300, 70, 7), (2100, 96, 13), (64, 1100, 1)])
def test_bf16_panels_give_the_fp32_panels_results_bit_for_bit(use, monkeypatch, features, out_features, rows):
    """Weights whose values are all bf16 values (a checkpoint published in bf16, loaded in fp32)
    are held in bf16 panels, which the kernel widens back exactly: every op's result equals the
    fp32 panels' to the bit (a long k in slices, a padded last panel, a partial block of rows,
    the next product's panels prefetched), and the panels give the weight back exactly."""
    torch.manual_seed(features)
    layer, after = torch.nn.Linear(features, out_features), torch.nn.Linear(out_features, features)
    with torch.no_grad():
        for module in (layer, after):
            module.weight.copy_(module.weight.bfloat16().float())
    halves = use("kernel", [layer, after])
    assert halves.panels_bf16 and {p.dtype for p in halves.packed.values()} == {torch.bfloat16}
    monkeypatch.setenv("INSTRUCTFORGE_MATMUL", "fp32-panels")
    whole = Projections(cpu_model(), [layer, after])
    assert not whole.panels_bf16 and {p.dtype for p in whole.packed.values()} == {torch.float32}
    x, other = torch.randn(rows, features), torch.randn(rows, out_features)
    with torch.inference_mode():
        for op in ("none", "swish", "mul", "add"):
            got, want = (
                kernels.linear(
                    p.kernel, x, p.packed[layer], out_features, layer.bias, op, other, then=p.following[layer]
                )
                for p in (halves, whole)
            )
            assert torch.equal(got, want), op
        unpacked = kernels.linear_unpack(halves.kernel, halves.packed[layer], out_features, features)
    assert unpacked.dtype == torch.float32 and torch.equal(unpacked, layer.weight)


def test_one_weight_bf16_cannot_hold_keeps_every_panel_fp32(layers, use):
    """The panels are all bf16 or all fp32 (a product prefetches the next one's): one weight with a
    value bf16 cannot hold keeps the model's weights in fp32."""
    with torch.no_grad():
        layers[0].weight.copy_(layers[0].weight.bfloat16().float())
    projections = use("kernel", layers)
    assert not projections.panels_bf16 and {p.dtype for p in projections.packed.values()} == {torch.float32}
