"""Where the training loop gets the direction to ablate, step by step.

The loop asks a :class:`DirectionProvider` for the direction before each step and tells it when a step
ends. :class:`FixedDirection` is the paper (one direction extracted before training, used throughout);
:class:`RefreshedDirection` re-extracts the difference in means on the *training* model every N steps
and smooths it with an EMA (an adaptive attacker re-extracts from the defended model, so a defence can
train against a moving target). Per-layer directions ``(n_layers, d_model)`` and subspaces pass through
unchanged to :func:`drtk.interventions.ablation_hooks`.
"""

import logging
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from drtk.errors import ConfigError, DataError
from drtk.interventions import unit

logger = logging.getLogger(__name__)


@runtime_checkable
class DirectionProvider(Protocol):
    #: the layer the direction was read at, for layer profiles centred on it (None: unknown)
    layer: "int | None"

    def current(self) -> Tensor: ...

    def after_step(self, model: Any, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FixedDirection:
    """One direction for the whole run (shape ``(d,)``, ``(L, d)``, ``(1|L, k, d)``)."""

    def __init__(self, vector: Tensor, layer: "int | None" = None) -> None:
        self.vector = vector.detach().float()
        self.layer = layer

    def current(self) -> Tensor:
        return self.vector

    def after_step(self, model: Any, step: int) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"vector": self.vector}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vector = state["vector"].float()


class RefreshedDirection(FixedDirection):
    """Re-extract the difference-in-means direction on the training model every ``every`` steps.

    ``r <- unit(ema * r + (1 - ema) * unit(r_new))`` where ``r_new`` is read at the same layer and
    post-instruction ``position`` (or at every layer, for a per-layer ``(L, d)`` start).

    Args:
        vector: the starting direction ``(d,)`` or ``(L, d)``.
        harmful, harmless: probe prompts (keep them out of the evaluation sets).
        every: refresh period in steps. ema: weight of the old direction.
        layer: the layer of a single direction (required for ``(d,)``).
        position: post-instruction position as a negative offset (-1: last token).
        per_layer_fraction: share of steps (drawn from a generator seeded by ``seed``) on which
            :meth:`current` returns every layer's own refreshed direction ``(L, d)`` instead of the single
            one, once the first refresh has produced them.
    """

    def __init__(
        self, vector: Tensor, *, harmful: Sequence[str], harmless: Sequence[str], every: int, ema: float = 0.9,
        layer: "int | None" = None, position: int = -1, per_layer_fraction: float = 0.0, seed: int = 0,
    ) -> None:
        super().__init__(unit(vector.detach().float()), layer)
        self.per_layer: "Tensor | None" = None
        self.per_layer_fraction = per_layer_fraction
        self.generator = torch.Generator().manual_seed(seed)
        if vector.ndim == 1 and layer is None:
            raise ConfigError("RefreshedDirection of a single direction needs its layer (Direction.layer)")
        if vector.ndim > 2:
            raise ConfigError("RefreshedDirection refreshes (d,) or (n_layers, d) directions, not subspaces")
        if not harmful or not harmless:
            raise DataError("RefreshedDirection needs harmful and harmless probe prompts")
        self.harmful, self.harmless = list(harmful), list(harmless)
        self.every, self.ema, self.position = every, ema, position

    @torch.no_grad()
    def after_step(self, model: Any, step: int) -> None:
        if (step + 1) % self.every:
            return
        from drtk.directions import collect_post_instruction

        n = -self.position
        diff = (collect_post_instruction(model, self.harmful, n_post=n)[0]
                - collect_post_instruction(model, self.harmless, n_post=n)[0])  # (layer, d)
        new = unit(diff[self.layer] if self.vector.ndim == 1 else diff).to(self.vector.device)
        self.vector = unit(self.ema * self.vector + (1 - self.ema) * new)
        if self.per_layer_fraction > 0:
            norms = diff.norm(dim=-1, keepdim=True)
            fallback = self.vector.expand_as(diff) if self.vector.ndim == 1 else self.vector
            fresh = torch.where(norms > 0, diff / norms.clamp(min=1e-12), fallback)  # zero rows keep the old one
            self.per_layer = fresh.to(self.vector.device) if self.per_layer is None else unit(
                self.ema * self.per_layer + (1 - self.ema) * fresh.to(self.vector.device))
        logger.debug("refreshed direction at step %d", step)

    def current(self) -> Tensor:
        if self.per_layer is not None and self.per_layer_fraction > 0:
            if float(torch.rand((), generator=self.generator)) < self.per_layer_fraction:
                return self.per_layer
        return self.vector

    def state_dict(self) -> dict[str, Any]:
        return {"vector": self.vector, "per_layer": self.per_layer, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vector = state["vector"].float()
        self.per_layer = state.get("per_layer")
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
