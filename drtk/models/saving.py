"""Saving a (possibly edited or trained) :class:`ChatModel` as a plain Hugging Face folder.

The bridge wraps the Hugging Face model in place, so its own ``save_pretrained`` sees every weight
under several aliases. drtk rebuilds the clean Hugging Face parameter names on a meta-device copy of the
architecture and assigns the live tensors to it (no copy of the weights), then saves that.
"""

import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def hf_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The wrapped model's parameters and buffers under their plain Hugging Face names."""
    hf = model.hf
    with torch.device("meta"):
        skeleton = type(hf)(hf.config)
    wanted = set(skeleton.state_dict().keys())
    clean: dict[str, torch.Tensor] = {}
    for key, value in hf.state_dict().items():
        name = key.replace("._original_component", "")
        if name in wanted and name not in clean:
            clean[name] = value
    missing = wanted - set(clean)
    # A tied output embedding has no tensor of its own; anything else missing is a real problem.
    if hf.config.tie_word_embeddings:
        missing = {k for k in missing if not k.startswith("lm_head.")}
    if missing:
        raise RuntimeError(f"could not map these Hugging Face weights back from the bridge: {sorted(missing)[:5]}")
    return clean


def save_pretrained(model: Any, folder: "str | Path", *, extra_metadata: "dict[str, Any] | None" = None) -> Path:
    """Write ``model`` (weights, config, tokenizer with its chat template) to ``folder``, loadable by
    :func:`drtk.models.load_model`."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = model.hf
    with torch.device("meta"):
        skeleton = type(hf)(hf.config)
    skeleton.load_state_dict(hf_state_dict(model), strict=False, assign=True)
    if hf.config.tie_word_embeddings:
        skeleton.tie_weights()
    skeleton.config._attn_implementation = "eager"
    skeleton.save_pretrained(folder, safe_serialization=True)
    model.tokenizer.save_pretrained(folder)
    meta = {"source_model_id": model.model_id} | (extra_metadata or {})
    (folder / "drtk_model.json").write_text(json.dumps(meta, indent=2, default=str))
    return folder
