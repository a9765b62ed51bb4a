"""``fresh-ablation``: the adaptive attack. Re-extract and re-select the refusal direction on the model
under attack (on fit/val prompts disjoint from the evaluated ones), then ablate it everywhere.

A defence trained against one direction can move refusal elsewhere; this attack finds where it went.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from drtk.attacks._shared import fresh_direction, last_fresh, provenance
from drtk.attacks.base import Attack, AttackContext, register_attack
from drtk.attacks.direction_ablation import ablated
from drtk.errors import ConfigError


@register_attack
@dataclass(frozen=True, kw_only=True)
class FreshAblation(Attack):
    """Ablate a direction found by :func:`drtk.directions.find_direction` on the attacked model itself.

    Attributes:
        strength: fraction of the component removed, in [0, 1].
    """

    name = "fresh-ablation"
    knob = "strength"
    edits_model = True
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"strength must be in [0, 1], got {self.strength}")

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        with ablated(model, fresh_direction(model, context).vector, self.strength):
            yield model

    def describe(self, context: AttackContext) -> dict[str, Any]:
        fresh = last_fresh(context)
        out = provenance(fresh)
        if fresh is not None:
            out["selection"] = {k: fresh.metadata.get(k) for k in ("bypass", "induce", "kl")}
        return out
