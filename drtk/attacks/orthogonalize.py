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
from drtk.interventions.orthogonalize import check_exact


@register_attack
@dataclass(frozen=True, kw_only=True)
class Orthogonalize(Attack):
    """Attributes:
    direction_source: ``given`` (the context's direction) or ``fresh`` (re-extracted on this model).
    approximate: run on an architecture where weight orthogonalization only approximates ablation (one
        that normalises each block's outputs before the residual stream: Gemma 2 and 3, OLMo 2); without
        it such a model is refused before any attack runs.
    """

    name = "orthogonalize"
    edits_model = True
    direction_source: str = "given"
    approximate: bool = False

    def __post_init__(self) -> None:
        check_source(self.direction_source)

    @property
    def label(self) -> str:
        """``orthogonalize``, with the settings that change what is measured when they are not the defaults
        (``orthogonalize[direction_source=fresh,approximate=1]``): results are keyed by the label."""
        extra = ([f"direction_source={self.direction_source}"] if self.direction_source != "given" else []) + (
            ["approximate=1"] if self.approximate else [])
        return f"{self.name}[{','.join(extra)}]" if extra else self.name

    def check(self, model: Any, context: AttackContext) -> None:
        super().check(model, context)
        check_exact(model, self.approximate)

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        d = get_direction(model, context, self.direction_source, attack=self.name)
        if d.kind != "single":
            raise ConfigError(f"orthogonalize takes one direction, got a {d.kind} direction")
        undo = orthogonalize(model, d.vector.to(model.device), inplace=True, approximate=self.approximate)  # no copy
        try:
            yield model
        finally:
            undo()

    def describe(self, context: AttackContext) -> dict[str, Any]:
        out = provenance(context.direction) if self.direction_source == "given" else {"direction": "fresh"}
        return out | ({"approximate": True} if self.approximate else {})
