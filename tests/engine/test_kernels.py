"""The C decode-attention kernel gives the torch attention's result for sequences of different
lengths in one batch (grouped-query heads, a slot cache longer than any sequence), and decoding
without it (`INSTRUCTFORGE_ATTENTION=torch`, or no compiler) still works."""

import pytest
import torch

from tasks.backends.engine import kernels as attention


def torch_attention(q, keys, values, lengths, scale):
    """Reference: each sequence alone through SDPA over its own positions."""
    groups = q.shape[1] // keys.shape[1]
    out = []
    for i, length in enumerate(lengths.tolist()):
        k = keys[i, :, :length].repeat_interleave(groups, 0)
        v = values[i, :, :length].repeat_interleave(groups, 0)
        out.append(torch.nn.functional.scaled_dot_product_attention(q[i], k, v, scale=scale))
    return torch.stack(out)


@pytest.fixture(scope="module")
def kernel():
    lib = attention.kernel()
    if lib is None:
        pytest.skip("no C compiler here: decoding uses the torch attention")
    return lib


@pytest.mark.parametrize(
    "kv_heads,heads,dim", [(3, 9, 64), (2, 2, 64), (1, 4, 64), (3, 9, 128), (2, 4, 80), (1, 2, 12)]
)
@pytest.mark.parametrize("build", ["kernel", "avx2_kernel", "plain_kernel"])
def test_kernel_equals_per_sequence_attention(build, kv_heads, heads, dim, request):
    kernel = request.getfixturevalue(build)
    generator = torch.Generator().manual_seed(0)
    slots, length, n = 7, 40, 5  # only the first n slots run; the rest hold stale values
    keys = torch.randn(slots, kv_heads, length, dim, generator=generator)
    values = torch.randn(slots, kv_heads, length, dim, generator=generator)
    q = torch.randn(n, heads, 1, dim, generator=generator)
    k, v = (torch.randn(n, kv_heads, 1, dim, generator=generator) for _ in range(2))
    lengths = torch.tensor([1, 40, 17, 3, 32])  # whole blocks of 8 positions and partial ones
    expected_keys, expected_values = keys.clone(), values.clone()
    for i, length in enumerate(lengths.tolist()):  # the step's own key and value join the cache
        expected_keys[i, :, length - 1], expected_values[i, :, length - 1] = k[i, :, 0], v[i, :, 0]
    got = attention.decode_attention(kernel, q, k, v, keys, values, lengths, 0.125)
    expected = torch_attention(q, expected_keys, expected_values, lengths, 0.125)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)


@pytest.mark.parametrize("dim", [64, 12])
@pytest.mark.parametrize("build", ["kernel", "avx2_kernel", "plain_kernel"])
def test_a_shared_prefix_is_read_from_its_own_buffer(build, dim, request):
    """Rows with a hot prefix read its positions from the kept [layers, kv_heads, P, dim] buffer,
    layer `layer`, and the rest from their slot: bit-identical to the slot holding the same values,
    and (with other values in the slots) the buffer's values are the ones used."""
    kernel = request.getfixturevalue(build)
    generator = torch.Generator().manual_seed(1)
    layers, layer, kv_heads, heads, slots, length = 3, 1, 2, 6, 4, 48
    keys = torch.randn(layers, slots, kv_heads, length, dim, generator=generator)
    values = torch.randn(layers, slots, kv_heads, length, dim, generator=generator)
    prefixes = [
        attention.KeptPrefix(*(torch.randn(layers, kv_heads, p, dim, generator=generator) for _ in range(2)))
        for p in (5, 13)
    ]
    rows = [prefixes[0], None, prefixes[1], prefixes[0]]  # row 1 has no kept prefix
    for i, prefix in enumerate(rows):  # a copy of its prefix in each slot, as the torch attention's
        if prefix:
            keys[:, i, :, : prefix.length], values[:, i, :, : prefix.length] = prefix.keys, prefix.values
    q = torch.randn(4, heads, 1, dim, generator=generator)
    k, v = (torch.randn(4, kv_heads, 1, dim, generator=generator) for _ in range(2))
    lengths = torch.tensor([6, 30, 40, 21])
    hot = attention.Hot(rows)

    def run(hot):
        cache_k, cache_v = keys[layer].clone(), values[layer].clone()
        return attention.decode_attention(kernel, q, k, v, cache_k, cache_v, lengths, 0.125, hot, layer)

    plain = run(None)
    assert torch.equal(run(hot), plain)
    for i, prefix in enumerate(rows):  # now only the buffers hold the prefixes' values
        if prefix:
            keys[:, i, :, : prefix.length], values[:, i, :, : prefix.length] = 1e6, -1e6
    assert torch.equal(run(hot), plain)


@pytest.mark.parametrize("dim", [64, 12])
@pytest.mark.parametrize("build", ["kernel", "avx2_kernel", "plain_kernel"])
def test_a_bf16_cache_gives_the_fp32_result_on_its_widened_values(build, dim, request):
    """A bf16 cache (and bf16 kept prefixes): the step's key and value are stored rounded exactly
    as torch rounds them (ties to even), and the result is bit-identical to the fp32 kernel's on
    the same values widened to fp32, shared prefixes and all."""
    kernel = request.getfixturevalue(build)
    generator = torch.Generator().manual_seed(2)
    layers, layer, kv_heads, heads, slots, length = 2, 1, 2, 6, 4, 40
    keys, values = (torch.randn(layers, slots, kv_heads, length, dim, generator=generator) for _ in range(2))
    prefix = attention.KeptPrefix(*(torch.randn(layers, kv_heads, 7, dim, generator=generator) for _ in "kv"))
    q = torch.randn(3, heads, 1, dim, generator=generator)
    k, v = (torch.randn(3, kv_heads, 1, dim, generator=generator) for _ in range(2))
    k[0, 0, 0, :3] = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(2 + 2**-7)])  # halfway: ties to even
    lengths = torch.tensor([9, 33, 17])
    rows = [prefix, None, prefix]

    def run(dtype, k, v):
        cache_k, cache_v = (part[layer].to(dtype) for part in (keys, values))
        kept = attention.KeptPrefix(prefix.keys.to(dtype), prefix.values.to(dtype))
        hot = attention.Hot([kept if p else None for p in rows])
        got = attention.decode_attention(kernel, q, k, v, cache_k, cache_v, lengths, 0.125, hot, layer)
        return got, cache_k, cache_v

    got, cache_k, cache_v = run(torch.bfloat16, k, v)
    for i, at in enumerate((lengths - 1).tolist()):
        assert torch.equal(cache_k[i, :, at], k[i, :, 0].bfloat16())
        assert torch.equal(cache_v[i, :, at], v[i, :, 0].bfloat16())
    assert cache_k[0, 0, 8, :3].tolist() == [1.0, 1 + 2**-6, -2.0]
    keys, values = keys.bfloat16().float(), values.bfloat16().float()
    prefix = attention.KeptPrefix(prefix.keys.bfloat16().float(), prefix.values.bfloat16().float())
    want, _, _ = run(torch.float32, k.bfloat16().float(), v.bfloat16().float())
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_native_and_avx2_builds_give_bit_identical_attention(kernel, avx2_kernel, dtype):
    """Where the native build has AVX-512 its value mix loads each value once for up to four
    query heads; every sum is still the same chain of multiply-adds as the AVX2 loops'."""
    generator = torch.Generator().manual_seed(3)
    for kv_heads, heads, dim in [(2, 14, 64), (1, 3, 128), (4, 4, 64), (2, 10, 192)]:
        keys, values = (torch.randn(5, kv_heads, 60, dim, generator=generator).to(dtype) for _ in "kv")
        q = torch.randn(4, heads, 1, dim, generator=generator)
        k, v = (torch.randn(4, kv_heads, 1, dim, generator=generator) for _ in "kv")
        lengths = torch.tensor([60, 1, 33, 9])
        got = [
            attention.decode_attention(lib, q, k, v, keys.clone(), values.clone(), lengths, 0.125)
            for lib in (kernel, avx2_kernel)
        ]
        assert torch.equal(*got), (kv_heads, heads, dim)


def test_far_apart_scores_give_zero_weight_not_nan(kernel):
    """Scores 100+ below the largest (exp underflows) weigh nothing; the largest weighs 1."""
    keys = torch.zeros(1, 1, 16, 8)
    keys[0, 0, 5] = 30.0  # q . k = 240 against 0 elsewhere
    values = torch.arange(16.0)[None, None, :, None].expand(1, 1, 16, 8).contiguous()
    q, new = torch.ones(1, 1, 1, 8), torch.zeros(1, 1, 1, 8)
    got = attention.decode_attention(kernel, q, new, new, keys, values, torch.tensor([16]), 1.0)
    assert torch.equal(got, torch.full((1, 1, 1, 8), 5.0))


def test_kernel_reads_only_each_sequence_positions(kernel):
    """Positions past a sequence's length (a finished row's leftovers) must not leak in."""
    keys, values = torch.randn(2, 1, 8, 4), torch.randn(2, 1, 8, 4)
    q, k, v = torch.randn(2, 1, 1, 4), torch.randn(2, 1, 1, 4), torch.randn(2, 1, 1, 4)
    lengths = torch.tensor([3, 8])
    before = attention.decode_attention(kernel, q, k, v, keys, values, lengths, 0.5)
    keys[0, :, 3:], values[0, :, 3:] = 1e6, -1e6
    after = attention.decode_attention(kernel, q, k, v, keys, values, lengths, 0.5)
    assert torch.equal(before, after)


@pytest.mark.parametrize("build", ["kernel", "avx2_kernel", "plain_kernel"])
def test_rms_norm_gives_the_llama_module_result(build, request):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    kernel = request.getfixturevalue(build)
    generator = torch.Generator().manual_seed(3)
    for width in (576, 100):  # a multiple of the kernel's 16 partial sums, and not
        module = LlamaRMSNorm(width, eps=1e-5)
        module.weight.data = torch.randn(width, generator=generator)
        x = torch.randn(7, 1, width, generator=generator) * 4
        with torch.inference_mode():
            got = attention.rms_norm(kernel, x, module.weight, module.variance_epsilon)
            torch.testing.assert_close(got, module(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("build", ["kernel", "avx2_kernel", "plain_kernel"])
def test_rotary_embedding_in_place_is_bit_identical_to_transformers(build, request):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    kernel = request.getfixturevalue(build)
    generator = torch.Generator().manual_seed(4)
    n, heads, kv_heads, dim = 5, 6, 2, 64
    # q and k as the decode step makes them: each product's [n, 1, heads * dim] output, viewed
    q = torch.randn(n, 1, heads * dim, generator=generator).view(n, 1, heads, dim).transpose(1, 2)
    k = torch.randn(n, 1, kv_heads * dim, generator=generator).view(n, 1, kv_heads, dim).transpose(1, 2)
    angles = torch.rand(n, 1, dim // 2, generator=generator) * 100
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    expected_q, expected_k = apply_rotary_pos_emb(q, k, cos, sin)
    assert attention.rope_(kernel, q, k, cos, sin)
    assert torch.equal(q, expected_q) and torch.equal(k, expected_k)
    # a prefill's several positions per row, or rows that are not contiguous: left to transformers
    several = torch.randn(n, heads, 3, dim)
    assert not attention.rope_(kernel, several, several[:, :kv_heads], cos, sin)
    joint = torch.randn(n, 1, (heads + kv_heads) * dim)
    strided = joint[..., : heads * dim].view(n, 1, heads, dim).transpose(1, 2)
    before = strided.clone()
    assert not attention.rope_(kernel, strided, k, cos, sin) and torch.equal(strided, before)


def test_torch_setting_turns_the_kernel_off(monkeypatch, tmp_path):
    monkeypatch.setenv("INSTRUCTFORGE_ATTENTION", "torch")
    assert attention._build(tmp_path) is None and attention._build(None) is None


def test_without_a_working_compiler_there_is_no_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert attention._build(tmp_path) is None  # nothing built there yet
    assert not list(tmp_path.rglob("*.so"))


def test_the_library_is_cached_in_the_given_directory_by_source(tmp_path, monkeypatch):
    """Built into the directory the caller passes, and rebuilt when a source or header changes
    (the name carries their hash); without a directory, it still builds."""
    if attention.kernel() is None:
        pytest.skip("no C compiler here: decoding uses the torch attention")
    first = attention._build(tmp_path)
    assert first is not None and first.linear_packed_floats(65, 3) == 128 * 3
    (built,) = tmp_path.glob("*.so")
    assert attention._build(tmp_path) is not None and list(tmp_path.glob("*.so")) == [built]
    header = tmp_path / "kernels.h"
    header.write_text(attention.HEADERS[0].read_text() + "\n/* changed */\n")
    monkeypatch.setattr(attention, "HEADERS", (header, *attention.HEADERS[1:]))
    assert attention._build(tmp_path) is not None and len(list(tmp_path.glob("*.so"))) == 2
    assert attention._build(None) is not None
