"""``actadd``: subtract the refusal direction from the residual stream at its layer, every position.

The raw (unnormalised) difference-of-means vector is subtracted ``coeff`` times at
``blocks.{layer}.hook_resid_pre``; ``coeff`` is the strength knob.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from drtk.attacks._shared import check_source, get_direction, provenance
from drtk.attacks.base import Attack, AttackContext, register_attack
from drtk.errors import ConfigError
from drtk.interventions import actadd


@register_attack
@dataclass(frozen=True, kw_only=True)
class ActAdd(Attack):
    """Attributes:
    coeff: multiples of the raw direction subtracted (> 0).
    direction_source: ``given`` or ``fresh``; the direction must be a single one with a layer.
    """

    name = "actadd"
    knob = "coeff"
    default_sweep = (0.5, 1.0, 2.0)
    edits_model = True
    coeff: float = 1.0
    direction_source: str = "given"

    def __post_init__(self) -> None:
        check_source(self.direction_source)
        if self.coeff < 0:
            raise ConfigError(f"coeff is how much of the direction is subtracted and must be >= 0, got {self.coeff}")

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        d = get_direction(model, context, self.direction_source, attack=self.name)
        if d.kind != "single" or d.layer is None:
            raise ConfigError(f"actadd needs a single direction with a layer, got a {d.kind} direction")
        with actadd(model, -d.vector.to(model.device), layers=[d.layer], coeff=self.coeff):
            yield model

    def describe(self, context: AttackContext) -> dict[str, Any]:
        return provenance(context.direction) if self.direction_source == "given" else {"direction": "fresh"}
