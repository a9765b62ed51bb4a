"""Scoped hooks: every edit of a forward pass lives inside a ``with`` block.

A scope resolves every target hook before registering any, and removes all of them on exit, also when
the body raises. During training keep the scope open across ``loss.backward()``: the edits are part of
the autograd graph, so gradients flow through them.

Example:
    >>> with ablation(model, direction):                 # doctest: +SKIP
    ...     texts = generate(model, prompts)
"""

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from drtk._types import ABLATION_POINTS, Site, all_sites
from drtk.errors import DirectionMismatchError, DrtkError
from drtk.interventions.core import add_direction, project_out_subspace, project_out_unit, unit

logger = logging.getLogger(__name__)

HookFn = Callable[[Tensor, Any], Tensor]
#: A per-site mask provider: given the site and the activation there, the weight of the edit per
#: ``(batch, pos)`` cell, or None for "edit everything".
MaskFn = Callable[[Site, Tensor], "Tensor | None"]


@contextmanager
def hook_scope(model: Any, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
    """Register forward hooks ``(hook_name, fn)`` for the duration of the block.

    ``fn(activation, hook) -> activation`` must return a new tensor (never edit in place).
    """
    unknown = [name for name, _ in hooks if name not in model._hook_names]
    if unknown:
        raise DrtkError(
            f"unknown hook point(s) {unknown[:3]} for {model.model_id!r}; sites look like "
            f"'blocks.0.hook_resid_pre' with layers 0..{model.n_layers - 1}"
        )
    with model.hooks(hooks):
        yield


def layer_bases(direction: Tensor, n_layers: int, d_model: int) -> Float[Tensor, "layer k d_model"]:
    """Bring a direction into per-layer basis form ``(n_layers, k, d_model)``.

    Accepted: ``(d_model,)`` one direction everywhere; ``(n_layers, d_model)`` one per layer;
    ``(1, k, d_model)`` one subspace everywhere; ``(n_layers, k, d_model)`` one subspace per layer.
    """
    if direction.shape[-1] != d_model:
        raise DirectionMismatchError(
            f"direction has d_model {direction.shape[-1]} but the model has {d_model}; "
            "was it computed on another model?"
        )
    if direction.ndim == 1:
        return direction.expand(n_layers, 1, d_model)
    if direction.ndim == 2:
        if direction.shape[0] != n_layers:
            raise DirectionMismatchError(
                f"per-layer directions have {direction.shape[0]} rows but the model has {n_layers} layers "
                "(for a subspace shared by all layers pass shape (1, k, d_model))"
            )
        return direction.unsqueeze(1)
    if direction.ndim == 3:
        if direction.shape[0] == 1:
            return direction.expand(n_layers, -1, -1)
        if direction.shape[0] != n_layers:
            raise DirectionMismatchError(
                f"per-layer subspaces have {direction.shape[0]} layers but the model has {n_layers}"
            )
        return direction
    raise DirectionMismatchError(f"direction must have 1 to 3 axes, got shape {tuple(direction.shape)}")


def ablation_hooks(
    model: Any,
    direction: Tensor,
    *,
    sites: "Sequence[Site] | None" = None,
    mask_fn: "MaskFn | None" = None,
) -> list[tuple[str, HookFn]]:
    """Hooks that project ``direction`` out at each site (default: every ablation site of every layer)."""
    bases = layer_bases(direction.detach(), model.n_layers, model.d_model)
    bases = bases.to(device=model.device, dtype=torch.float32)
    sites = list(sites) if sites is not None else all_sites(model.n_layers, ABLATION_POINTS)
    for s in sites:
        model.check_site(s)
    k = bases.shape[1]
    units = unit(bases[:, 0]) if k == 1 else None  # normalised once, not per call
    cast: dict[torch.dtype, Tensor] = {}  # the units in each activation dtype met, cast once

    def make(site: Site) -> HookFn:
        def hook(acts: Tensor, hook: Any) -> Tensor:
            mask = mask_fn(site, acts) if mask_fn is not None else None
            if units is None:
                return project_out_subspace(acts, bases[site.layer], mask)
            if acts.dtype not in cast:
                cast[acts.dtype] = units.to(acts.dtype)
            return project_out_unit(acts, cast[acts.dtype][site.layer], mask)

        return hook

    return [(s.hook_name, make(s)) for s in sites]


def actadd_hooks(
    model: Any,
    vector: Float[Tensor, "d_model"],
    *,
    layers: Sequence[int],
    coeff: float = 1.0,
    point: str = "resid_pre",
) -> list[tuple[str, HookFn]]:
    """Hooks that add ``coeff * vector`` to the residual stream at the given layers, every position."""
    if vector.ndim != 1 or vector.shape[0] != model.d_model:
        raise DirectionMismatchError(
            f"activation-addition vector has shape {tuple(vector.shape)} but the model has d_model {model.d_model}"
        )
    v = vector.detach().to(device=model.device)
    sites = [Site(layer, point) for layer in layers]
    for s in sites:
        model.check_site(s)
    return [(s.hook_name, lambda acts, hook: add_direction(acts, v, coeff)) for s in sites]


@contextmanager
def ablation(model: Any, direction: Tensor, **kwargs: Any) -> Iterator[None]:
    """Directional ablation for the duration of the block (see :func:`ablation_hooks`)."""
    with hook_scope(model, ablation_hooks(model, direction, **kwargs)):
        yield


@contextmanager
def actadd(model: Any, vector: Tensor, *, layers: Sequence[int], coeff: float = 1.0) -> Iterator[None]:
    """Activation addition for the duration of the block (see :func:`actadd_hooks`)."""
    with hook_scope(model, actadd_hooks(model, vector, layers=layers, coeff=coeff)):
        yield
