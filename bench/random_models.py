"""Llama-family models users run on CPUs, built from their published configs with random weights,
so a benchmark downloads nothing: same shapes, so the same work per token as the real checkpoints
(their texts are noise; random rows rarely end early, so every row runs to its token limit).

The configs are the architecture fields of each model's `config.json` on the Hugging Face Hub.
Each model is saved once, with the embedded model's tokenizer and chat template, under
~/.cache/instructforge/random-models/<name>.bf16, in bfloat16 safetensors (0.7-3.4 GB each) as the
published checkpoints are: loading converts them to fp32 in memory, as it does for a user's model
(an fp32 file would be mapped from the page cache instead, and memory figures would differ).
"""

from __future__ import annotations

import os
from pathlib import Path

# name -> (transformers model_type, architecture fields)
CONFIGS: dict[str, tuple[str, dict]] = {
    "SmolLM2-360M": (
        "llama",
        dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
             num_key_value_heads=5, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
             rms_norm_eps=1e-5, tie_word_embeddings=True),
    ),
    "SmolLM2-1.7B": (
        "llama",
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
             num_key_value_heads=32, vocab_size=49152, max_position_embeddings=8192, rope_theta=130000.0,
             rms_norm_eps=1e-5, tie_word_embeddings=True),
    ),
    "Qwen2.5-0.5B": (
        "qwen2",
        dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
             rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False),
    ),
    "Qwen2.5-1.5B": (
        "qwen2",
        dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
             num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
             rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False),
    ),
    "Llama-3.2-1B": (
        "llama",
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
             rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
             rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
    ),
}  # fmt: skip


def model_config(name: str):
    """The transformers config of `name` (a key of CONFIGS)."""
    from transformers import AutoConfig

    model_type, fields = CONFIGS[name]
    return AutoConfig.for_model(model_type, **fields)


def random_model(name: str, root: Path | None = None) -> Path:
    """A directory holding `name` with random weights (seeded) and the embedded tokenizer; made once."""
    root = (
        root
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "instructforge" / "random-models"
    )
    path = root / f"{name}.bf16"
    if (path / "model.safetensors").exists() or (path / "model.safetensors.index.json").exists():
        return path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.backends.embedded import embedded_model_dir

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(name), dtype=torch.bfloat16)
    partial = path.with_name(name + ".partial")
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained(partial)
    partial.rename(path)
    return path
