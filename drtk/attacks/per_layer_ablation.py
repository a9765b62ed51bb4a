"""``per-layer-ablation``: one direction (k=1) or a k-dimensional subspace per layer, fit on the model under
attack, each ablated at its own layer's sites. Catches refusal that a defence spread across layers.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from drtk._types import ABLATION_POINTS, all_sites
from drtk.attacks._shared import fit_per_layer, live_layers
from drtk.attacks.base import Attack, AttackContext, register_attack
from drtk.errors import ConfigError
from drtk.interventions import ablation


@register_attack
@dataclass(frozen=True, kw_only=True)
class PerLayerAblation(Attack):
    """Attributes:
    k: directions per layer (1: per-layer difference of means; 2 or 4: top singular subspace).
    position: post-instruction position the directions are read at (negative offset).
    """

    name = "per-layer-ablation"
    knob = "k"
    default_sweep = ()
    edits_model = True
    k: int = 1
    position: int = -1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k must be >= 1 (1, 2 or 4 are typical), got {self.k}")
        if self.position >= 0:
            raise ConfigError(f"position is a negative offset from the end (-1 = last token), got {self.position}")

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        vec = fit_per_layer(model, context, self.k, self.position).vector.clone()
        live = live_layers(vec)
        dead = [i for i in range(vec.shape[0]) if i not in live]
        if dead:  # zero at those layers: nothing to ablate there; any non-zero stand-in keeps the shapes valid
            vec[dead] = 1.0
        sites = [s for s in all_sites(model.n_layers, ABLATION_POINTS) if s.layer in live]
        with ablation(model, vec.to(model.device), sites=sites):
            yield model

    def describe(self, context: AttackContext) -> dict[str, Any]:
        return {"direction": {"kind": "per_layer" if self.k == 1 else "subspace", "k": self.k,
                              "position": self.position, "fit_on": "model under attack"}}
