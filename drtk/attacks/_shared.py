"""Helpers the direction-based attacks share: where their direction comes from, and fresh re-extraction."""

import logging
from typing import Any

from drtk.attacks.base import AttackContext, no_direction_message
from drtk.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DIRECTION_SOURCES = ("given", "fresh")


def check_source(source: str) -> None:
    if source not in DIRECTION_SOURCES:
        raise ConfigError(f"direction_source must be one of {DIRECTION_SOURCES}, got {source!r}")


def _check_disjoint(fit: dict[str, list[str]], context: AttackContext) -> None:
    evaluated = context.cache.get("eval_prompts")
    if not evaluated:
        return
    from drtk.data import normalize_prompt

    seen = {normalize_prompt(p) for p in evaluated}
    shared = {k: sum(normalize_prompt(p) in seen for p in v) for k, v in fit.items()}
    if any(shared.values()):
        raise DataError(
            f"adaptive attack fit/val prompts overlap the evaluation prompts ({shared}); "
            "fit on prompts disjoint from the ones being judged (e.g. the 'fit'/'val' splits)"
        )


def fresh_direction(model: Any, context: AttackContext) -> Any:
    """Re-extract and re-select a single direction on ``model`` itself (cached per model in the context)."""
    from drtk.directions import SelectionConfig, find_direction

    key = ("fresh", id(model), model.model_id, context.cache.get("model_tag"))
    if key not in context.cache:
        sets = context.fit_sets()
        _check_disjoint(sets, context)
        cfg = context.selection or SelectionConfig(top_k=8)
        logger.info("re-extracting a fresh direction on %s (%d fit / %d val prompts)", model.model_id,
                    len(sets["harmful_fit"]), len(sets["harmful_val"]))
        result = find_direction(model, sets["harmful_fit"], sets["harmless_fit"], sets["harmful_val"],
                                sets["harmless_val"], config=cfg)
        context.cache[key] = _nonzero(result)
        context.cache[("candidates", *key[1:])] = result.candidates  # per-layer directions on the same fit sets
    return context.cache[key]


def _nonzero(result: Any) -> Any:
    """The selected direction, or the best-scoring non-zero candidate when selection picked a zero vector.

    At layer 0 the residual stream is the token embedding, and post-instruction tokens are the same for
    every prompt, so those candidates are exactly zero; selection can still rank one first on a tiny
    model. Ablating a zero vector is undefined, so fall back to the next best scored candidate.
    """
    from dataclasses import replace

    d = result.direction
    if float(d.vector.norm()) > 0:
        return d
    for _, row in result.table[result.table.bypass.notna()].sort_values("bypass").iterrows():
        vec = result.candidates.vector(int(row.position), int(row.layer))
        if float(vec.norm()) > 0:
            logger.warning("selected direction is zero (layer %d); using %s instead", d.layer, row.site)
            return replace(d, vector=vec.clone(), layer=int(row.layer), position=int(row.position), site=str(row.site))
    raise DataError("every scored direction candidate is zero; the harmful and harmless prompts look identical to the model")


def last_fresh(context: AttackContext) -> Any:
    """The most recently re-extracted direction in this context, or None."""
    found = [v for k, v in context.cache.items() if isinstance(k, tuple) and k[0] == "fresh"]
    return found[-1] if found else None


def fit_per_layer(model: Any, context: AttackContext, k: int, position: int) -> Any:
    """Per-layer directions (k=1) or k-dim per-layer subspaces fit on ``model`` itself (cached)."""
    from drtk.directions import per_layer_directions, per_layer_subspaces

    key = ("per_layer", id(model), model.model_id, context.cache.get("model_tag"), k, position)
    if key not in context.cache:
        sets = context.fit_sets()
        _check_disjoint(sets, context)
        h, b = sets["harmful_fit"], sets["harmless_fit"]
        cands = context.cache.get(("candidates", *key[1:4]))  # a fresh direction's, fit on these prompts
        context.cache[key] = (per_layer_directions(model, h, b, position=position, candidates=cands) if k == 1
                              else per_layer_subspaces(model, h, b, k=k, position=position))
    return context.cache[key]


def live_layers(vector: Any) -> list[int]:
    """Layers whose per-layer direction is non-zero (layer 0 at template positions is exactly zero)."""
    norms = vector.flatten(1).norm(dim=-1) if vector.ndim > 1 else vector.norm()[None]
    return [i for i, n in enumerate(norms.tolist()) if n > 1e-8]


def get_direction(model: Any, context: AttackContext, source: str, *, attack: str) -> Any:
    """The direction an attack uses: the context's (``given``) or one re-extracted on the model (``fresh``)."""
    check_source(source)
    if source == "fresh":
        return fresh_direction(model, context)
    if context.direction is None:
        raise ConfigError(no_direction_message(attack))
    context.direction.check_model(model)
    return context.direction


def provenance(direction: Any) -> dict[str, Any]:
    """What a report needs to know about a direction."""
    if direction is None:
        return {}
    return {"direction": {"model_id": direction.model_id, "kind": direction.kind, "layer": direction.layer,
                          "position": direction.position, "site": direction.site,
                          "shape": list(direction.vector.shape)}}
