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

    With ``positions`` and/or ``layers``, the directions read at those other post-instruction positions and
    source layers are refreshed too (each from its first reading on, with the same EMA), and each step
    ablates the span of the refreshed direction and *one* of them, drawn at random: shape ``(1, 2, d)``, or
    ``(L, 2, d)`` on a per-layer step (each layer's own directions at the two positions). A fresh-direction
    attacker selects the layer and position whose direction breaks the defended model, not only the ones
    the defence started from; the starting position's direction stays ablated on every step.

    Args:
        vector: the starting direction ``(d,)`` or ``(L, d)``.
        harmful, harmless: probe prompts (keep them out of the evaluation sets).
        every: refresh period in steps. ema: weight of the old direction.
        layer: the layer of a single direction (required for ``(d,)``).
        position: post-instruction position as a negative offset (-1: last token).
        per_layer_fraction: share of steps (drawn from a generator seeded by ``seed``) on which
            :meth:`current` returns every layer's own refreshed direction ``(L, d)`` instead of the single
            one, once the first refresh has produced them.
        positions: more post-instruction positions (negative offsets, e.g. ``(-5,)``) to read directions at.
        layers: more layers to read the single direction at (with ``position`` and each of ``positions``).
        select_every: every this many steps, select a direction on the training model as the fresh-direction
            attacker does (:func:`drtk.directions.select_direction` over every position and eligible layer:
            the lowest first-token refusal score under its ablation, on half the probe prompts, candidates
            fitted on the other half); until the next selection each step ablates the span of the refreshed
            direction and the selected one (with ``positions`` or ``layers``, the selected one is drawn among
            the others; a selection at the refreshed direction's own site adds nothing). None: off.
        select_top: candidates (the best-separating) scored at each selection.
    """

    def __init__(
        self, vector: Tensor, *, harmful: Sequence[str], harmless: Sequence[str], every: int, ema: float = 0.9,
        layer: "int | None" = None, position: int = -1, per_layer_fraction: float = 0.0, seed: int = 0,
        positions: Sequence[int] = (), layers: Sequence[int] = (), select_every: "int | None" = None,
        select_top: int = 8,
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
        if any(p >= 0 for p in positions):
            raise ConfigError(f"refresh positions are negative offsets from the end of the prompt (-1: last), got {tuple(positions)}")
        if layers and vector.ndim != 1:
            raise ConfigError("more source layers need a single (d,) direction; per-layer directions already have every layer")
        self.harmful, self.harmless = list(harmful), list(harmless)
        self.every, self.ema, self.position = every, ema, position
        self.positions = (position, *(p for p in dict.fromkeys(positions) if p != position))
        sources = (layer, *(x for x in dict.fromkeys(layers) if x != layer)) if vector.ndim == 1 else (None,)
        #: the other (position index, layer) pairs whose directions are drawn from, in the order of ``extra``
        self.sources = [(i, x) for i in range(len(self.positions)) for x in sources if (i, x) != (0, sources[0])]
        self.extra: "Tensor | None" = None  # (len(sources), *vector.shape)
        self.extra_per_layer: "Tensor | None" = None  # (len(positions) - 1, L, d)
        if select_every is not None and (select_every < 1 or len(self.harmful) < 2 or len(self.harmless) < 2):
            raise ConfigError(f"selection needs select_every >= 1 and at least 2 probe prompts per side, got "
                              f"{select_every} with {len(self.harmful)} / {len(self.harmless)}")
        self.select_every, self.select_top = select_every, select_top
        self.selected: "Tensor | None" = None  # (d,): the attacker's pick at the last selection
        self.selected_site: "tuple[int, int] | None" = None  # its (layer, position)
        self.refusal_tokens: Any = None  # a RefusalTokens, found at the first selection, kept for resume

    @torch.no_grad()
    def after_step(self, model: Any, step: int) -> None:
        if self.select_every is not None and (step + 1) % self.select_every == 0:
            self._select(model)
        if (step + 1) % self.every:
            return
        from drtk.directions import collect_post_instruction

        n = -min(self.positions)
        diffs = (collect_post_instruction(model, self.harmful, n_post=n)
                 - collect_post_instruction(model, self.harmless, n_post=n))[[n + p for p in self.positions]]
        diffs = diffs.to(self.vector.device)  # (position, layer, d)
        self.vector = unit(self.ema * self.vector + (1 - self.ema) * unit(diffs[0, self.layer] if self.vector.ndim == 1
                                                                          else diffs[0]))
        if self.sources:
            picked = torch.stack([diffs[i, x] if x is not None else diffs[i] for i, x in self.sources])
            self.extra = self._blend(self.extra, unit(picked))
        if self.per_layer_fraction > 0:
            norms = diffs.norm(dim=-1, keepdim=True)
            own = self.vector if self.vector.ndim == 2 else self.vector.expand_as(diffs[0])
            fresh = torch.where(norms > 0, diffs / norms.clamp(min=1e-12), own)  # zero rows keep the old one
            self.per_layer = self._blend(self.per_layer, fresh[0])
            if len(self.positions) > 1:
                self.extra_per_layer = self._blend(self.extra_per_layer, fresh[1:])
        logger.debug("refreshed direction at step %d", step)

    def _select(self, model: Any) -> None:
        """Pick the direction a fresh-direction attacker would pick on ``model`` now."""
        from drtk.directions import SelectionConfig, compute_candidates, find_refusal_tokens, select_direction

        fit_h, val_h, fit_b, val_b = self.harmful[::2], self.harmful[1::2], self.harmless[::2], self.harmless[1::2]
        if self.refusal_tokens is None:
            self.refusal_tokens = find_refusal_tokens(model, val_h, val_b)
        cands = compute_candidates(model, fit_h, fit_b)
        picked = select_direction(model, cands, val_h, val_b, refusal_tokens=self.refusal_tokens,
                                  config=SelectionConfig(top_k=self.select_top, verify_top=0)).direction
        site = (int(picked.layer), int(picked.position))
        if site != self.selected_site:
            logger.info("the attacker's direction is now at layer %d, position %d", *site)
        self.selected, self.selected_site = unit(picked.vector.float()).to(self.vector.device), site

    def _blend(self, old: "Tensor | None", fresh: Tensor) -> Tensor:
        return fresh if old is None else unit(self.ema * old + (1 - self.ema) * fresh)

    def current(self) -> Tensor:
        per_layer = (self.per_layer is not None and self.per_layer_fraction > 0
                     and float(torch.rand((), generator=self.generator)) < self.per_layer_fraction)
        if per_layer:
            if self.extra_per_layer is None:
                return self.per_layer
            j = int(torch.randint(len(self.extra_per_layer), (), generator=self.generator))
            return torch.stack([self.per_layer, self.extra_per_layer[j]], dim=1)  # (L, 2, d)
        own_site = self.selected_site == (self.layer, self.position)  # the refreshed direction covers it
        picked = None if self.selected is None or own_site else self.selected.expand_as(self.vector)[None]
        partners = [t for t in (self.extra, picked) if t is not None]
        if not partners:
            return self.vector
        partner = torch.cat(partners)
        j = int(torch.randint(len(partner), (), generator=self.generator))
        pair = torch.stack([self.vector, partner[j]], dim=-2)  # (2, d) or (L, 2, d)
        return pair[None] if pair.ndim == 2 else pair

    def state_dict(self) -> dict[str, Any]:
        return {"vector": self.vector, "per_layer": self.per_layer, "generator": self.generator.get_state(),
                "extra": self.extra, "extra_per_layer": self.extra_per_layer, "selected": self.selected,
                "selected_site": None if self.selected_site is None else list(self.selected_site),
                "refusal_tokens": None if self.refusal_tokens is None else vars(self.refusal_tokens)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vector = state["vector"].float()
        self.per_layer = state.get("per_layer")
        self.extra, self.extra_per_layer = state.get("extra"), state.get("extra_per_layer")
        from drtk.directions import RefusalTokens

        self.selected, tokens = state.get("selected"), state.get("refusal_tokens")
        self.refusal_tokens = None if tokens is None else RefusalTokens(**tokens)
        self.selected_site = tuple(state["selected_site"]) if state.get("selected_site") is not None else None
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
