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
from typing import Any, Iterator

import torch

from drtk.errors import TrainingError

logger = logging.getLogger(__name__)

_WRAP = re.compile(r"\._original_component")


def hf_name(name: str) -> str:
    """The standard Hugging Face name of a (bridge-wrapped) parameter or module."""
    return _WRAP.sub("", name)


def hf_module_names(hf: torch.nn.Module) -> dict[int, str]:
    """The standard Hugging Face name of each module of ``hf``, by ``id``.

    Walking a bridge-wrapped model names a module after the first path that reaches it, and the bridge
    registers its components under aliases (``self_attn.q`` for ``self_attn.q_proj``); for fused projections
    (Phi-3's ``qkv_proj``, ``gate_up_proj``) it also adds split copies the forward pass never uses. A module
    gets the name it has in a plain model of the same class; the split copies get none.
    """
    with torch.device("meta"):
        real = {name for name, _ in type(hf)(hf.config).named_modules()}
    out: dict[int, str] = {}
    for name, mod in hf.named_modules(remove_duplicate=False):
        std = hf_name(name).replace(".base_layer", "")
        if std in real:
            out.setdefault(id(mod), std)
    return out


def _lora_layers(hf: torch.nn.Module) -> Iterator[tuple[str, Any]]:
    """Each LoRA layer of ``hf`` with its standard name (see :func:`hf_module_names`)."""
    from peft.tuners.lora import LoraLayer

    names = hf_module_names(hf)
    for name, mod in hf.named_modules():
        if isinstance(mod, LoraLayer):
            if id(mod) not in names:
                raise TrainingError(f"a LoRA adapter sits on {hf_name(name)}, which a plain "
                                    f"{type(hf).__name__} does not have: it cannot be exported")
            yield names[id(mod)], mod


def save_adapter(peft_model: Any, out_dir: "str | Path", *, base: str) -> Path:
    """Write the LoRA adapter of ``peft_model`` to ``out_dir`` in PEFT format, with ``drtk_base.json``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # PEFT's own names for the adapter weights: one per LoRA layer (the bridge's aliases of a layer would
    # give several, or hide one), under the layer's standard name.
    layers = list(_lora_layers(peft_model.get_base_model()))
    state = {f"base_model.model.{name}.lora_{ab}.weight": getattr(mod, f"lora_{ab}")["default"].weight.detach().cpu().contiguous()
             for name, mod in layers for ab in "AB"}
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = peft_model.peft_config["default"]
    leaves = sorted({name.split(".")[-1] for name, _ in layers})
    d = cfg.to_dict()
    d.update(target_modules=leaves, base_model_name_or_path=base)
    d = {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}
    (out / "adapter_config.json").write_text(json.dumps(d, indent=2, default=str))
    (out / "drtk_base.json").write_text(json.dumps(_base_entry(base), indent=2))
    return out


@torch.no_grad()
def save_merged(model: Any, out_dir: "str | Path") -> Path:
    """Write the model's full weights, its config and tokenizer to ``out_dir`` as a Hugging Face folder.
    LoRA adapters the model carries (after ``Trainer(..., TrainConfig(lora=True)).train()``) are merged
    into the copy that is written, each active one at its own scale; the training model is left unchanged."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = model.hf
    state = {}
    for k, v in hf.state_dict().items():
        if ".lora_" not in k:
            state[hf_name(k).replace(".base_layer.", ".")] = v.detach().cpu().clone()
    for name, mod in _lora_layers(hf):  # add each adapter's delta to the copy
        if not mod.disable_adapters:
            key = name + ".weight"
            for adapter in mod.active_adapters:
                if adapter in mod.lora_A:
                    state[key] = state[key] + mod.get_delta_weight(adapter).cpu().to(state[key].dtype)
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


def _base_entry(base: str) -> dict[str, str]:
    """A record's base: as given, and where it is a local folder also its absolute path (``base_path``), so
    the lineage is found from any working folder (the base given relative to the one it was trained in)."""
    from drtk.models.loading import local_path

    where = local_path(base)
    return {"base": base} | ({"base_path": where} if where else {})


def save_training_record(out_dir: "str | Path", *, base: str, method: str, prompts: "dict[str, list[str]]") -> Path:
    """Write ``drtk_train.json`` into a saved model folder: the base model, the method, and the prompts
    it was trained on by role (``harmful``, ``benign`` -- :meth:`TrainingSet.prompts` -- and e.g. ``refresh``
    for direction re-extraction).
    A base that is a folder with its own record passes it on (``base_record``), so a model trained from a
    trained model still knows every prompt before it."""
    out = Path(out_dir)
    record: dict[str, Any] = {**_base_entry(base), "method": method,
                              "prompts": {role: sorted(set(ps)) for role, ps in prompts.items() if ps}}
    inherited = Path(base) / TRAINING_RECORD
    if inherited.is_file():
        record["base_record"] = json.loads(inherited.read_text())
    path = out / TRAINING_RECORD
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return path
