"""``orthogonalize``: bake directional ablation into the weights (every residual-stream writer is
projected off the direction), generate, and restore the weights on exit.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from drtk.attacks._shared import check_source, get_direction, provenance
from drtk.attacks.base import Attack, AttackContext, register_attack
from drtk.errors import ConfigError
from drtk.interventions import orthogonalize


@register_attack
@dataclass(frozen=True, kw_only=True)
class Orthogonalize(Attack):
    """Attributes:
    direction_source: ``given`` (the context's direction) or ``fresh`` (re-extracted on this model).
    """

    name = "orthogonalize"
    edits_model = True
    direction_source: str = "given"

    def __post_init__(self) -> None:
        check_source(self.direction_source)

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        d = get_direction(model, context, self.direction_source, attack=self.name)
        if d.kind != "single":
            raise ConfigError(f"orthogonalize takes one direction, got a {d.kind} direction")
        undo = orthogonalize(model, d.vector.to(model.device), inplace=True)  # in place: no model copy
        try:
            yield model
        finally:
            undo()

    def describe(self, context: AttackContext) -> dict[str, Any]:
        return provenance(context.direction) if self.direction_source == "given" else {"direction": "fresh"}
