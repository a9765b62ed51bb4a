"""Per-layer directions and per-layer refusal subspaces, for adaptive attacks and defences.

Per layer ``l``, at one post-instruction position, the harmful prompts' activations are centred on the
harmless mean; the top ``k`` right singular vectors of that matrix span the layer's refusal subspace.
With ``k = 1`` this is close to the normalised difference of means, which :func:`per_layer_directions`
returns exactly.
"""

from typing import Any, Sequence

import torch

from drtk.directions.artifact import Direction
from drtk.directions.candidates import collect_post_instruction
from drtk.errors import ConfigError


def per_layer_directions(
    model: Any, harmful: Sequence[str], harmless: Sequence[str], *, position: int = -1, batch_size: int = 32,
    candidates: Any = None,
) -> Direction:
    """Difference of means at every layer for one position: ``kind="per_layer"``, shape ``(layer, d_model)``.
    ``candidates``: the :class:`~drtk.directions.Candidates` already computed on these prompts (their means
    are reused instead of running the model again)."""
    if candidates is None:
        hm = collect_post_instruction(model, harmful, batch_size=batch_size)
        hl = collect_post_instruction(model, harmless, batch_size=batch_size)
    else:
        hm, hl = candidates.harmful_mean, candidates.harmless_mean
    vec = (hm - hl)[position].cpu()
    return Direction(vec, "per_layer", model.model_id, model.n_layers, model.d_model, position=position,
                     metadata={"n_harmful": len(harmful), "n_harmless": len(harmless)})


def per_layer_subspaces(
    model: Any, harmful: Sequence[str], harmless: Sequence[str], *, k: int = 2, position: int = -1, batch_size: int = 32
) -> Direction:
    """Top-``k`` refusal subspace per layer: ``kind="subspace"``, shape ``(layer, k, d_model)``."""
    if k < 1:
        raise ConfigError(f"subspace dimension k must be >= 1, got {k}")
    if k > len(harmful):
        raise ConfigError(f"k={k} directions need at least {k} harmful prompts, got {len(harmful)}")
    acts = collect_post_instruction(model, harmful, batch_size=batch_size, reduce="none")[:, position]  # (b, L, d)
    mean_b = collect_post_instruction(model, harmless, batch_size=batch_size)[position].cpu()  # (L, d)
    centred = (acts - mean_b).transpose(0, 1)  # (L, b, d)
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    basis = vh[:, :k].float()  # (L, k, d)
    # Orient each first vector like the mean difference, so k=1 agrees in sign with diff-in-means.
    dots = (basis[:, 0] * centred.mean(1)).sum(-1)
    basis[:, 0] *= torch.where(dots >= 0, 1.0, -1.0)[:, None]
    return Direction(basis, "subspace", model.model_id, model.n_layers, model.d_model, position=position,
                     metadata={"k": k, "n_harmful": len(harmful), "n_harmless": len(harmless)})
