"""``per-layer-ablation``: one direction (k=1) or a k-dimensional subspace per layer, fit on the model under
attack, each ablated at its own layer's sites. Catches refusal that a defence spread across layers.

Ablating at every layer can break a small model outright (loops, word salad: see the coherent ASR of
:mod:`drtk.evaluation.harness`); ``max_layer_fraction`` keeps the edit to the layers below that share of
the depth, as direction selection does (Arditi et al. skip the last 20%).
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
    max_layer_fraction: ablate only at layers below ``max_layer_fraction * n_layers`` (1.0: every layer).
    """

    name = "per-layer-ablation"
    knob = "k"
    default_sweep = ()
    edits_model = True
    k: int = 1
    position: int = -1
    max_layer_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.max_layer_fraction <= 1:
            raise ConfigError(f"max_layer_fraction must be in (0, 1], got {self.max_layer_fraction}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1 (1, 2 or 4 are typical), got {self.k}")
        if self.position >= 0:
            raise ConfigError(f"position is a negative offset from the end (-1 = last token), got {self.position}")

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        vec = fit_per_layer(model, context, self.k, self.position).vector.clone()
        live = [i for i in live_layers(vec) if i < self.max_layer_fraction * model.n_layers]
        if not live:
            raise ConfigError(f"per-layer-ablation: no layer below {self.max_layer_fraction} of the depth has a "
                              "non-zero direction; raise max_layer_fraction")
        dead = [i for i in range(vec.shape[0]) if i not in live]
        if dead:  # zero at those layers: nothing to ablate there; any non-zero stand-in keeps the shapes valid
            vec[dead] = 1.0
        sites = [s for s in all_sites(model.n_layers, ABLATION_POINTS) if s.layer in live]
        with ablation(model, vec.to(model.device), sites=sites):
            yield model

    def describe(self, context: AttackContext) -> dict[str, Any]:
        return {"direction": {"kind": "per_layer" if self.k == 1 else "subspace", "k": self.k,
                              "position": self.position, "fit_on": "model under attack",
                              "max_layer_fraction": self.max_layer_fraction}}
