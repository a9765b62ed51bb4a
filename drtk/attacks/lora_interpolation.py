"""``lora-interpolation``: walk a trained model's weights back toward its base, ``W_base + lam (W - W_base)``
for every parameter, and attack the blended model (by default with directional ablation). This is the
recipe that broke the released DeepRefusal checkpoint: a defence that lives in a small weight delta can
be partly undone at little capability cost.

The base comes from ``AttackContext.reference``, else from the model folder's ``drtk_base.json`` or
``run.json`` (key ``base``/``base_model``), else from a merged-adapter model id ``"<base>+<folder>"``.
"""

import json
import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from drtk.attacks.base import Attack, AttackContext, AttackInputs, attack_class, register_attack
from drtk.errors import ConfigError, DirectionMismatchError

logger = logging.getLogger(__name__)

#: Inner attacks that only edit the model (they compose with the weight blend).
INNER = ("none", "direction-ablation", "fresh-ablation", "per-layer-ablation", "actadd", "orthogonalize")


def resolve_base(model_id: str) -> "str | None":
    """The base model a drtk-trained model names, or None."""
    folder = Path(model_id.split("+", 1)[-1])
    for name in ("drtk_base.json", "run.json"):
        path = folder / name
        if path.is_file():
            meta = json.loads(path.read_text())
            for cfg in (meta, meta.get("config", {}) if isinstance(meta.get("config"), dict) else {}):
                for key in ("base", "base_model", "base_model_name_or_path"):
                    if isinstance(cfg.get(key), str):
                        return cfg[key]
    return model_id.split("+", 1)[0] if "+" in model_id else None


def no_base_message(model_id: str) -> str:
    return (f"lora-interpolation needs the base of {model_id!r}: its folder has no drtk_base.json or run.json "
            "naming one; pass it as AttackContext.reference (drtk eval --reference BASE)")


def reference_model(model: Any, context: AttackContext) -> Any:
    if context.reference is not None:
        return context.reference
    key = ("base-model", model.model_id)
    if key not in context.cache:
        base = resolve_base(model.model_id)
        if base is None:
            raise ConfigError(no_base_message(model.model_id))
        from drtk.models import load_model

        logger.info("loading base model %s for interpolation", base)
        context.cache[key] = load_model(base, device=model.device, dtype=model.dtype)
    return context.cache[key]


@contextmanager
def interpolated(model: Any, base: Any, lam: float) -> Iterator[Any]:
    """Set every parameter to ``W_base + lam (W - W_base)`` in place; restore on exit."""
    params = dict(model.hf.named_parameters())
    base_params = dict(base.hf.named_parameters())
    if params.keys() != base_params.keys():
        missing = sorted(params.keys() ^ base_params.keys())[:3]
        raise DirectionMismatchError(
            f"{model.model_id!r} and its base {base.model_id!r} have different parameters (e.g. {missing}); "
            "interpolation needs the same architecture (merge adapters first)"
        )
    saved = {}
    try:
        with torch.no_grad():
            for name, p in params.items():
                b = base_params[name]
                if b.shape != p.shape:
                    raise DirectionMismatchError(f"parameter {name}: {tuple(p.shape)} vs base {tuple(b.shape)}")
                saved[name] = p.detach().clone()
                p.copy_(b.to(p) + lam * (p - b.to(p)))
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


@register_attack
@dataclass(frozen=True, kw_only=True)
class LoraInterpolation(Attack):
    """Attributes:
    lam: interpolation weight (0 = base model, 1 = trained model), the knob.
    then: the attack run on the blended model, one of ``INNER`` (default ``direction-ablation``).
    """

    name = "lora-interpolation"
    knob = "lam"
    default_sweep = (0.0, 0.25, 0.5, 0.75, 1.0)
    edits_model = True
    lam: float = 0.5
    then: str = "direction-ablation"

    def __post_init__(self) -> None:
        if self.then not in INNER:
            raise ConfigError(f"lora-interpolation then= must be one of {INNER}, got {self.then!r}")
        if not -0.5 <= self.lam <= 1.5:
            raise ConfigError(f"lam must be in [-0.5, 1.5] (0 = base, 1 = trained), got {self.lam}")

    @property
    def inner(self) -> Attack:
        return attack_class(self.then)()

    def check(self, model: Any, context: AttackContext) -> None:
        super().check(model, context)
        if context.reference is None and resolve_base(model.model_id) is None:
            raise ConfigError(no_base_message(model.model_id))
        self.inner.check(model, context)

    def prepare(self, model: Any, prompts: Sequence[str], context: AttackContext) -> AttackInputs:
        return self.inner.prepare(model, prompts, context)

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        base = reference_model(model, context)
        previous = context.cache.get("model_tag")
        with ExitStack() as stack:
            stack.enter_context(interpolated(model, base, self.lam))
            context.cache["model_tag"] = f"lam={self.lam}"  # fresh directions are re-fit per blend
            stack.callback(context.cache.__setitem__, "model_tag", previous)
            yield stack.enter_context(self.inner.applied(model, context))

    def describe(self, context: AttackContext) -> dict[str, Any]:
        return {"inner": self.then, "base": getattr(context.reference, "model_id", None)} | self.inner.describe(context)
