"""How well a direction separates harmful from harmless prompts."""

from jaxtyping import Float
from torch import Tensor


def auroc(positive: Float[Tensor, "n"], negative: Float[Tensor, "m"]) -> float:
    """Area under the ROC curve of scores: P(score of a positive > score of a negative), ties count half."""
    pos, neg = positive.double().flatten(), negative.double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("AUROC needs at least one positive and one negative score")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def auroc_by_layer(positive: Float[Tensor, "n layer"], negative: Float[Tensor, "m layer"]) -> list[float]:
    """:func:`auroc` at every layer."""
    return [auroc(positive[:, i], negative[:, i]) for i in range(positive.shape[1])]


__all__ = ["auroc", "auroc_by_layer"]

