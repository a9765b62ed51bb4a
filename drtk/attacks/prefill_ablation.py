"""``prefill+ablation``: both at once: a harmful prefill and the refusal direction ablated while the model
continues it. Breaks defences that hold against each alone.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from drtk.attacks._shared import check_source, get_direction, provenance
from drtk.attacks.base import Attack, AttackContext, AttackInputs, register_attack
from drtk.attacks.direction_ablation import ablated
from drtk.attacks.prefill import SOURCES, Prefill
from drtk.errors import ConfigError


@register_attack
@dataclass(frozen=True, kw_only=True)
class PrefillAblation(Attack):
    """Attributes:
    k, source, opener: as for ``prefill``.
    direction_source: ``given`` or ``fresh``, for the ablation.
    """

    name = "prefill+ablation"
    knob = "k"
    edits_model = True
    k: int = 16
    source: str = "ablation"
    opener: "str | None" = None
    direction_source: str = "given"

    def __post_init__(self) -> None:
        check_source(self.direction_source)
        if self.source not in SOURCES or self.k < 1:
            raise ConfigError(f"source must be one of {SOURCES} and k >= 1, got {self.source!r}, {self.k}")

    def check(self, model: Any, context: AttackContext) -> None:
        super().check(model, context)
        Prefill(k=self.k, source=self.source, opener=self.opener).check(model, context)

    def prepare(self, model: Any, prompts: Sequence[str], context: AttackContext) -> AttackInputs:
        return Prefill(k=self.k, source=self.source, opener=self.opener).prepare(model, prompts, context)

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        with ablated(model, get_direction(model, context, self.direction_source, attack=self.name).vector):
            yield model

    def describe(self, context: AttackContext) -> dict[str, Any]:
        return {"source": self.source} | (provenance(context.direction) if self.direction_source == "given" else {})
