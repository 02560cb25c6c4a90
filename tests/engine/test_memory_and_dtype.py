"""What the engine holds in memory and in which precision: the estimate counts a model's weights
exactly from its config, a model or slot count that cannot fit is refused before anything loads
(one line, with the numbers and what to change), the KV cache stays within the memory left; and
bf16 weights (INSTRUCTFORGE_DTYPE=bf16), with their bf16 KV cache, stay within bf16's rounding of
fp32, free the fp32 projections, and are refused with a reason on a CPU without native bf16."""

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tasks.backends import GenerationParams
from tasks.backends.embedded import EMBEDDED_MODEL, cache_root, embedded_model_dir
from tasks.backends.engine import cache_size, matmul
from tasks.backends.engine.slot_cache import SlotCache
from tasks.backends.transformers_backend import TransformersBackend

SMALL = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512,
)  # fmt: skip
GB = 2**30


def tiny(tmp_path, config, cls):
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    model = cls(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return model.eval()


@pytest.mark.parametrize(
    "config, cls",
    [
        (LlamaConfig(**SMALL, tie_word_embeddings=True), LlamaForCausalLM),
        (Qwen2Config(**SMALL, tie_word_embeddings=False, use_sliding_window=False), Qwen2ForCausalLM),
    ],
)
def test_the_estimate_counts_every_weight_from_the_config_alone(config, cls):
    config.vocab_size = 1000
    model = cls(config)
    assert sum(cache_size.parameter_counts(config)) == sum(p.numel() for p in model.parameters())
    assert cache_size.per_token_bytes(config) == SlotCache.bytes_per_token(model)
    # bf16 weights keep a bf16 cache: half the bytes a position
    bf16 = SlotCache.bytes_per_token(model, torch.bfloat16)
    assert cache_size.per_token_bytes(config, "bf16") == bf16 == cache_size.per_token_bytes(config) // 2
    loading, loaded = cache_size.weight_bytes(config, "fp32")
    loading16, loaded16 = cache_size.weight_bytes(config, "bf16")
    assert loaded16 < loading == 4 * sum(p.numel() for p in model.parameters()) < loaded  # + packed copy
    # the C kernel's panels replace the projections' weights: the packed head is the one copy more
    assert cache_size.weight_bytes(config, "fp32", kernel=True) == (loading, loading + 4 * 1000 * 64)


def test_a_model_that_cannot_fit_is_refused_before_it_loads(monkeypatch):
    monkeypatch.setattr(cache_size, "available_memory", lambda: 0.5 * GB)
    monkeypatch.setattr(
        "transformers.AutoModelForCausalLM.from_pretrained",
        lambda *a, **k: pytest.fail("loaded a model that cannot fit"),
    )
    with pytest.raises(ValueError) as refused:
        TransformersBackend(EMBEDDED_MODEL)
    message = str(refused.value)
    assert "\n" not in message and "0.5 GB is available" in message
    assert "KV cache" in message and "weights" in message and "INSTRUCTFORGE_DTYPE=bf16" in message


def test_too_many_slots_are_refused_with_the_most_that_fit(monkeypatch):
    config = LlamaConfig.from_pretrained(embedded_model_dir())
    kernel = matmul.kernel_products(cache_root() / "kernels")  # as the backend counts the weights here
    memory = cache_size.need_bytes(config, 100, cache_size.FIRST_LENGTH, "fp32", kernel)["total"] + 1
    monkeypatch.setattr(cache_size, "available_memory", lambda: memory)
    with pytest.raises(ValueError, match=r"with 4096 slots .*at most 100 slots \(INSTRUCTFORGE_SLOTS=100\)"):
        TransformersBackend(EMBEDDED_MODEL, batch_size=4096)
    assert cache_size.largest_slots(config, cache_size.FIRST_LENGTH, "fp32", memory, kernel=kernel) == 100
    cache_size.check_fits(config, 100, "fp32", "m", memory, kernel=kernel)  # exactly what fits: no refusal


def test_the_kv_cache_budget_is_what_is_left_once_the_model_is_loaded(monkeypatch):
    config = LlamaConfig.from_pretrained(embedded_model_dir())
    cpu = torch.device("cpu")
    monkeypatch.setattr(cache_size, "available_memory", lambda: 3 * GB)
    left = cache_size.engine_budget(cpu, config, 256)
    assert left == 3 * GB - cache_size.activation_bytes(config, 256) - cache_size._SPARE_BYTES
    monkeypatch.setattr(cache_size, "available_memory", lambda: 0.0)
    one_slot = cache_size.per_token_bytes(config) * cache_size.FIRST_LENGTH
    assert cache_size.engine_budget(cpu, config, 256) == one_slot  # never less than one slot
    monkeypatch.setenv("INSTRUCTFORGE_KV_CACHE_GB", "2")
    assert cache_size.engine_budget(cpu, config, 256) == 2 * GB  # the user's setting wins


def test_fp32_weights_live_once_in_the_kernels_panels_and_are_lent_back_exactly(tmp_path):
    reference = tiny(tmp_path, LlamaConfig(**SMALL, tie_word_embeddings=False), LlamaForCausalLM)
    backend = TransformersBackend(str(tmp_path), batch_size=2)
    linear, model = backend.engine.net.linear, backend.model
    if linear.kernel is None:
        pytest.skip("fp32 products run in oneDNN here (no AVX-512 or no C compiler): two copies")
    layer, want = model.model.layers[1], reference.model.layers[1]
    assert layer.mlp.down_proj.weight.numel() == 0 and layer.self_attn.q_proj.weight.numel() == 0
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)  # the head keeps its own
    with backend.engine.module_weights(), backend.engine.module_weights():  # nested: one copy
        assert torch.equal(layer.mlp.down_proj.weight, want.mlp.down_proj.weight)
        assert torch.equal(layer.self_attn.k_proj.weight, want.self_attn.k_proj.weight)
        assert linear._lent == 2
    assert layer.mlp.down_proj.weight.numel() == 0 and linear._lent == 0  # freed again
    params = GenerationParams(max_new_tokens=6, temperature=0.0)
    ids = backend.tokenizer("The tide comes in", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        unbatched = reference.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)
    assert backend._generate_hf([ids], params)[0].completion_tokens == 6  # generate runs on them
    assert (
        backend.generate(["The tide comes in"], params)[0].text
        == backend.tokenizer.decode(unbatched[0, len(ids) :], skip_special_tokens=True).strip()
    )


def test_bf16_is_refused_with_a_reason_on_a_cpu_without_bf16(tmp_path, monkeypatch):
    tiny(tmp_path, LlamaConfig(**SMALL), LlamaForCausalLM)
    monkeypatch.setattr(matmul, "cpu_flags", lambda: {"avx", "avx2", "fma"})
    with pytest.raises(ValueError) as refused:
        TransformersBackend(str(tmp_path), dtype="bf16")
    assert "AVX-512 BF16 or AMX" in str(refused.value) and "has AVX2 only" in str(refused.value)
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match="Unknown dtype 'fp16'"):
        TransformersBackend(str(tmp_path), dtype="fp16")


@pytest.mark.skipif(matmul.bf16_refusal() is not None, reason="this CPU has no native bf16")
@pytest.mark.parametrize(
    "config, cls",
    [
        (LlamaConfig(**SMALL), LlamaForCausalLM),
        (Qwen2Config(**SMALL, use_sliding_window=False), Qwen2ForCausalLM),
    ],
)
def test_bf16_weights_give_fp32s_logits_within_bf16_rounding(tmp_path, monkeypatch, config, cls):
    reference = tiny(tmp_path, config, cls)
    monkeypatch.setenv("INSTRUCTFORGE_DTYPE", "bf16")
    backend = TransformersBackend(str(tmp_path), batch_size=2)
    net = backend.engine.net
    layer = net.body.layers[0]
    assert net.linear.bf16 and layer.mlp.up_proj.weight.numel() == 0  # the fp32 copy is freed
    ids = torch.tensor(
        [backend.tokenizer("The capital of France is Paris and", add_special_tokens=False)["input_ids"]]
    )
    with torch.inference_mode():
        want = reference(ids).logits[:, -1]
        cache = SlotCache(backend.model, 2, 64)
        got = net.prefill(cache, 0, ids, torch.tensor([ids.shape[1]]))
    error = float((got - want).norm() / want.norm())
    assert 0 < error < 0.03  # bf16's 8 significant bits, not fp32's results and not a wrong layout
    gens = backend.generate(
        ["Once upon a time", "1 2 3"], GenerationParams(max_new_tokens=8, temperature=0.0)
    )
    assert all(g.completion_tokens == 8 for g in gens)
    assert net.kv_dtype == backend.engine.cache.k.dtype == torch.bfloat16


@pytest.mark.skipif(matmul.bf16_refusal() is not None, reason="this CPU has no native bf16")
@pytest.mark.parametrize("attention", ["kernel", "torch"])
def test_decode_steps_read_the_bf16_cache_within_bf16_rounding(tmp_path, monkeypatch, attention):
    """Prefill writes the prompt's keys and values into the bf16 cache and each decode step reads
    them back (the C kernel, or torch's attention where there is no compiler): the step's logits
    are the fp32 model's on the whole sequence, within bf16's rounding."""
    reference = tiny(tmp_path, LlamaConfig(**SMALL), LlamaForCausalLM)
    backend = TransformersBackend(str(tmp_path), batch_size=2, dtype="bf16")
    net = backend.engine.net
    if attention == "torch":
        monkeypatch.setattr(net, "kernel", None)  # as SlotModel is made without a compiler
        monkeypatch.setattr(net, "norm_kernel", False)
    elif net.kernel is None:
        pytest.skip("no C compiler here")
    ids = torch.stack([torch.arange(20, 27), torch.arange(300, 370, 10)])  # two prompts of 7 tokens
    with torch.inference_mode():
        cache = SlotCache(backend.model, 2, 64, zeroed=attention == "torch", dtype=net.kv_dtype)
        lengths = torch.tensor([ids.shape[1]] * 2)
        net.prefill(cache, 0, ids, lengths)
        for step, token in enumerate(([11, 12], [13, 14])):
            got = net.decode(cache, torch.tensor(token), lengths + step).clone()
            ids = torch.cat([ids, torch.tensor(token)[:, None]], dim=1)
            want = reference(ids).logits[:, -1]
            error = float((got - want).norm() / want.norm())
            assert 0 < error < 0.03, (step, error)
    assert cache.k.dtype == torch.bfloat16
