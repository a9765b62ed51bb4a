"""How well a direction -- or the best linear read-out -- separates harmful from harmless prompts."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
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


def fit_probe(positive: Float[Tensor, "n d"], negative: Float[Tensor, "m d"], *, l2: float = 1e-2,
              max_iter: int = 200) -> Callable[[Tensor], Tensor]:
    """An L2-regularised logistic regression, classes weighted equally, on standardised features.

    Returns the scoring function ``x -> logit`` (``> 0``: positive). Deterministic (full-batch L-BFGS,
    float64, zero start).
    """
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        raise ValueError("a probe needs at least one positive and one negative example")
    x = torch.cat([positive, negative]).double()
    y = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
    mu, sd = x.mean(0), x.std(0, unbiased=False) + 1e-6
    z = (x - mu) / sd
    weight = torch.where(y == 1, 0.5 / len(positive), 0.5 / len(negative))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")
        loss = (bce * weight).sum() + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda acts: ((acts.double() - mu) / sd) @ w + b


def probe_by_layer(
    positive: Float[Tensor, "n layer d"],
    negative: Float[Tensor, "m layer d"],
    positive_test: Float[Tensor, "n2 layer d"],
    negative_tests: Mapping[str, Float[Tensor, "m2 layer d"]],
    *,
    layers: "Sequence[int] | None" = None,
    l2: float = 1e-2,
) -> Any:
    """The linear ceiling of a refusal decision: a logistic probe per layer, fitted on one split and read
    on held-out prompts.

    Fine-tuning a model to refuse asks its output to make a harmful / benign decision; a probe on the
    residual stream measures how well the representation the model already has supports that decision.
    When the probe reaches a refusal / over-refusal corner that training does not, the gap lies in the
    training, not in the model.

    Returns:
        a ``pandas.DataFrame``, one row per layer: ``flagged:positive`` (share of held-out positives the
        probe calls positive: the refusal rate a perfect read-out of it would give), ``flagged:<name>``
        (the same for each benign set: its over-refusal) and ``auroc:<name>`` (positives vs that set).
    """
    import pandas as pd

    rows = []
    for layer in layers if layers is not None else range(positive.shape[1]):
        score = fit_probe(positive[:, layer], negative[:, layer], l2=l2)
        with torch.no_grad():
            pos = score(positive_test[:, layer])
            row: dict[str, Any] = {"layer": layer, "flagged:positive": float((pos > 0).double().mean())}
            for name, acts in negative_tests.items():
                neg = score(acts[:, layer])
                row[f"flagged:{name}"] = float((neg > 0).double().mean())
                row[f"auroc:{name}"] = auroc(pos, neg)
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["auroc", "auroc_by_layer", "fit_probe", "probe_by_layer"]

