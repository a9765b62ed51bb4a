"""``direction-ablation``: project a given refusal direction out of every residual-stream write.

With the direction found on the model *before* training this is the paper's "transfer" attack; the
``strength`` knob scales the removed component (0 = no edit, 1 = full ablation) for ASR-vs-KL curves.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from drtk.attacks._shared import check_source, get_direction, last_fresh, provenance
from drtk.attacks.base import Attack, AttackContext, register_attack
from drtk.errors import ConfigError
from drtk.interventions import ablation


@contextmanager
def ablated(model: Any, vector: torch.Tensor, strength: float = 1.0) -> Iterator[Any]:
    """Ablation scope with a uniform strength (None mask at full strength: the exact projection)."""
    mask_fn = None if strength == 1.0 else (lambda site, acts: torch.full(acts.shape[:2], strength, device=acts.device))
    with ablation(model, vector.to(model.device), mask_fn=mask_fn):
        yield model


@register_attack
@dataclass(frozen=True, kw_only=True)
class DirectionAblation(Attack):
    """Ablate ``AttackContext.direction`` (single, per-layer or subspace) at every ablation site.

    Attributes:
        strength: fraction of the component along the direction that is removed, in [0, 1].
        direction_source: ``given`` (the context's direction) or ``fresh`` (re-extracted on this model).
    """

    name = "direction-ablation"
    knob = "strength"
    default_sweep = ()
    edits_model = True
    strength: float = 1.0
    direction_source: str = "given"

    def __post_init__(self) -> None:
        check_source(self.direction_source)
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"strength must be in [0, 1], got {self.strength}")

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        direction = get_direction(model, context, self.direction_source, attack=self.name)
        with ablated(model, direction.vector, self.strength):
            yield model

    def describe(self, context: AttackContext) -> dict[str, Any]:
        d = context.direction if self.direction_source == "given" else None
        fresh = last_fresh(context)
        return provenance(d if d is not None else fresh)
