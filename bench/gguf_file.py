"""A Llama-family `*ForCausalLM` written as a GGUF that llama.cpp loads, with the `gguf` package:
llama.cpp's tensor names, q/k rows permuted for its rope as its converter does, Llama 3's rope
factors, the tokenizer padded to the model's vocabulary; unquantized (F32 or BF16) so llama.cpp
computes what our engine computes (bench/llama_cpp.py)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

ARCHES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}


def permute(weights: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`: HF's rotate-half query/key rows into
    the interleaved pairs llama.cpp's "llama" rope expects."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def rope(config) -> dict:
    """The config's rope parameters (transformers 5 keeps rope_theta and the scaling there)."""
    found = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    found.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return found


def llama3_rope_factors(config) -> torch.Tensor | None:
    """The `rope_freqs.weight` tensor convert_hf_to_gguf.py writes for Llama 3's rope scaling."""
    scaling = rope(config)
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        return None
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    freqs = 1.0 / (scaling["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def gguf_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """(llama.cpp name, tensor) of a Llama-family `*ForCausalLM`, as convert_hf_to_gguf.py names them."""
    config = model.config
    llama = ARCHES[config.model_type] == "llama"
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    found = [("token_embd.weight", model.model.embed_tokens.weight)]
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        for name, module in (("attn_q", attn.q_proj), ("attn_k", attn.k_proj), ("attn_v", attn.v_proj)):
            weight, bias = module.weight, module.bias
            if llama and name != "attn_v":
                weight = permute(weight, heads if name == "attn_q" else kv_heads)
                bias = None if bias is None else permute(bias, heads if name == "attn_q" else kv_heads)
            found.append((f"blk.{i}.{name}.weight", weight))
            if bias is not None:
                found.append((f"blk.{i}.{name}.bias", bias))
        found += [
            (f"blk.{i}.attn_output.weight", attn.o_proj.weight),
            (f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight),
            (f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight),
            (f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight),
            (f"blk.{i}.ffn_up.weight", mlp.up_proj.weight),
            (f"blk.{i}.ffn_down.weight", mlp.down_proj.weight),
        ]
    found.append(("output_norm.weight", model.model.norm.weight))
    if not config.tie_word_embeddings:
        found.append(("output.weight", model.lm_head.weight))
    factors = llama3_rope_factors(config)
    if factors is not None:
        found.append(("rope_freqs.weight", factors))
    return found


def write_gguf(model, tokenizer_dir: Path, path: Path, dtype: str = "f32") -> Path:
    """`model` (a Llama-family `*ForCausalLM`) as a GGUF llama.cpp loads: its weights unquantized,
    2-D ones in `dtype` ("f32" or "bf16"; norms and rope factors stay F32, as llama.cpp's converter
    keeps them), and the GPT-2-style BPE tokenizer of `tokenizer_dir`, padded to the model's
    vocabulary size (a random model's can be larger) as the converter pads."""
    import gguf
    import numpy as np
    from gguf.vocab import BpeVocab, SpecialVocab

    config = model.config
    arch = ARCHES[config.model_type]
    writer = gguf.GGUFWriter(str(path), arch)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(path.stem)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope(config)["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    file_type = gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_BF16
    writer.add_file_type(file_type)

    vocab = BpeVocab(tokenizer_dir)
    tokens, types = [], []
    for text, _score, kind in vocab.all_tokens():
        tokens.append(text.encode("utf-8") if isinstance(text, str) else text)
        types.append(kind)
    for i in range(len(tokens), config.vocab_size):
        tokens.append(f"[PAD{i}]".encode())
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")  # the embedded model's tokenizer, which every bench model uses
    writer.add_token_list(tokens[: config.vocab_size])
    writer.add_token_types(types[: config.vocab_size])
    SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=config.vocab_size).add_to_gguf(writer)

    for name, tensor in gguf_tensors(model):
        data = tensor.detach().float()
        if dtype == "bf16" and data.dim() == 2:
            raw = data.bfloat16().view(torch.int16).numpy()
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data.numpy(), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
