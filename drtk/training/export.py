"""Saving a trained model in Hugging Face formats that :func:`drtk.models.load_model` reads back.

* ``save_adapter``: the LoRA adapter in PEFT format (``adapter_config.json`` +
  ``adapter_model.safetensors``) plus ``drtk_base.json`` naming the base model, loadable on a plain
  Hugging Face model of the base.
* ``save_merged``: the full weights (adapter merged when there is one), ``config.json`` and the tokenizer.
* ``save_training_record``: ``drtk_train.json``, the prompts a model was trained on (its base model's too),
  so that an evaluation of the folder drops them from its prompt sets (:mod:`drtk.evaluation.contamination`).

The bridge wraps every HF module in place, so parameter names carry ``._original_component``; both
writers strip it, giving the standard Hugging Face names.
"""

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from drtk.errors import TrainingError

logger = logging.getLogger(__name__)

_WRAP = re.compile(r"\._original_component")


def hf_name(name: str) -> str:
    """The standard Hugging Face name of a (bridge-wrapped) parameter or module."""
    return _WRAP.sub("", name)


def save_adapter(peft_model: Any, out_dir: "str | Path", *, base: str) -> Path:
    """Write the LoRA adapter of ``peft_model`` to ``out_dir`` in PEFT format, with ``drtk_base.json``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {hf_name(k): v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = peft_model.peft_config["default"]
    leaves = sorted({hf_name(t).split(".")[-1] for t in cfg.target_modules})
    d = cfg.to_dict()
    d.update(target_modules=leaves, base_model_name_or_path=base)
    d = {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}
    (out / "adapter_config.json").write_text(json.dumps(d, indent=2, default=str))
    (out / "drtk_base.json").write_text(json.dumps({"base": base}, indent=2))
    return out


@torch.no_grad()
def save_merged(model: Any, out_dir: "str | Path", *, peft_model: Any = None) -> Path:
    """Write the model's full weights (LoRA merged in; the training model is left unchanged), its config
    and tokenizer to ``out_dir`` as a Hugging Face folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = model.hf
    state = {}
    for k, v in hf.state_dict().items():
        if ".lora_" not in k:
            state[hf_name(k).replace(".base_layer.", ".")] = v.detach().cpu().clone()
    if peft_model is not None:  # add each adapter's delta to a copy; the training weights stay as they are
        from peft.tuners.lora import LoraLayer

        for name, mod in hf.named_modules():
            if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
                key = hf_name(name) + ".weight"
                state[key] = state[key] + mod.get_delta_weight("default").cpu().to(state[key].dtype)
    with torch.device("meta"):
        fresh = type(hf)(hf.config)
    # The bridge's state dict also lists aliases of the same tensors (``attn.q``, ``ln1`` ...): keep the
    # names a plain Hugging Face model has.
    wanted = fresh.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise TrainingError(f"cannot export the model: weights {missing[:3]} were not found in the trained model")
    fresh.load_state_dict({k: state[k] for k in wanted}, assign=True, strict=True)
    if getattr(hf.config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.save_pretrained(str(out))
    model.tokenizer.save_pretrained(str(out))
    return out


TRAINING_RECORD = "drtk_train.json"


def save_training_record(out_dir: "str | Path", *, base: str, method: str, prompts: "dict[str, list[str]]") -> Path:
    """Write ``drtk_train.json`` into a saved model folder: the base model, the method, and the prompts
    it was trained on by role (``harmful``, ``benign`` -- :meth:`TrainingSet.prompts` -- and e.g. ``refresh``
    for direction re-extraction).
    A base that is a folder with its own record passes it on (``base_record``), so a model trained from a
    trained model still knows every prompt before it."""
    out = Path(out_dir)
    record: dict[str, Any] = {"base": base, "method": method,
                              "prompts": {role: sorted(set(ps)) for role, ps in prompts.items() if ps}}
    inherited = Path(base) / TRAINING_RECORD
    if inherited.is_file():
        record["base_record"] = json.loads(inherited.read_text())
    path = out / TRAINING_RECORD
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return path
