"""The slot-cache forward pass against transformers' own `generate` on tiny random models of the
other supported families (Qwen2 has attention biases, Mistral none), built from a config: greedy
tokens must be identical, one prompt at a time and batched with refills."""

import pytest
import torch
from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tasks.backends import GenerationParams
from tasks.backends.embedded import embedded_model_dir
from tasks.backends.transformers_backend import TransformersBackend

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


@pytest.mark.parametrize(
    "config, cls, published",
    [
        (Qwen2Config(**SMALL, use_sliding_window=False), Qwen2ForCausalLM, torch.float32),
        (MistralConfig(**SMALL, sliding_window=None), MistralForCausalLM, torch.float32),
        # stored in bf16, as most checkpoints are, and loaded in fp32: the C kernel's panels hold
        # the weights' bf16 values in bf16 (where it runs the products), with the same outputs
        (Qwen2Config(**SMALL, use_sliding_window=False), Qwen2ForCausalLM, torch.bfloat16),
    ],
)
def test_tiny_models_decode_like_generate(tmp_path, config, cls, published):
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    cls(config).to(published).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backend = TransformersBackend(str(tmp_path), batch_size=2)
    assert backend.engine is not None
    linear = backend.engine.net.linear
    assert backend.engine.net.lm.dtype == torch.float32
    assert linear.panels_bf16 == (published == torch.bfloat16 and linear.kernel is not None)
    prompts = ["Once upon a time", "The capital of France is Paris and", "1 2 3", "Hello there, how are"]
    params = GenerationParams(max_new_tokens=12, temperature=0.0)
    ids = [backend.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    expected = [backend._generate_hf([seq], params)[0].completion_tokens for seq in ids]
    texts = [backend._generate_hf([seq], params)[0].text for seq in ids]
    got = backend.generate(prompts, params)
    assert [g.text for g in got] == texts
    assert [g.completion_tokens for g in got] == expected
