"""Refusal directions: difference-in-means candidates, selection, per-layer directions and subspaces."""

from drtk.directions.artifact import Direction
from drtk.directions.candidates import (Candidates, collect_post_instruction, compute_candidates, probe_ceiling,
                                       projections_by_layer)
from drtk.directions.scoring import RefusalTokens, find_refusal_tokens, kl_divergence, last_logits, refusal_score
from drtk.directions.selection import SelectionConfig, SelectionResult, find_direction, select_direction
from drtk.directions.separation import auroc, auroc_by_layer, fit_probe, probe_by_layer
from drtk.directions.subspace import per_layer_directions, per_layer_subspaces

__all__ = [
    "Candidates",
    "Direction",
    "RefusalTokens",
    "SelectionConfig",
    "SelectionResult",
    "auroc",
    "auroc_by_layer",
    "collect_post_instruction",
    "compute_candidates",
    "find_direction",
    "find_refusal_tokens",
    "fit_probe",
    "kl_divergence",
    "last_logits",
    "per_layer_directions",
    "per_layer_subspaces",
    "probe_by_layer",
    "probe_ceiling",
    "projections_by_layer",
    "refusal_score",
    "select_direction",
]
