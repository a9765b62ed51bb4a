"""The two pieces of vector arithmetic every intervention in drtk is made of.

Directional ablation removes a direction ``r`` from an activation ``h``: ``h - (h . r_hat) r_hat``.
Activation addition moves ``h`` along ``r``: ``h + c r``. Both are written once here, out of place (an
in-place edit of a hooked activation breaks autograd), and every hook, the weight edit and the
training-time ablation call them.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def unit(direction: Float[Tensor, "*rest d_model"]) -> Float[Tensor, "*rest d_model"]:
    """Normalise along the last axis; a zero vector is an error, not a NaN."""
    norm = direction.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("cannot normalise a zero direction")
    return direction / norm


def project_out(
    acts: Float[Tensor, "*batch d_model"],
    direction: Float[Tensor, "*dbatch d_model"],
    mask: "Float[Tensor, '*batch'] | None" = None,
) -> Float[Tensor, "*batch d_model"]:
    """Remove the component of ``acts`` along ``direction`` (normalised here).

    Args:
        acts: activations, any leading shape.
        direction: one direction ``(d_model,)``, or one per leading index broadcastable to ``acts``.
        mask: optional weight per activation (1 = ablate, 0 = keep; values between scale the edit).

    Returns:
        A new tensor; ``acts`` is untouched. Idempotent, and the result is orthogonal to ``direction``.
    """
    return project_out_unit(acts, unit(direction).to(acts.dtype), mask)


def project_out_unit(
    acts: Float[Tensor, "*batch d_model"],
    r: Float[Tensor, "*dbatch d_model"],
    mask: "Float[Tensor, '*batch'] | None" = None,
) -> Float[Tensor, "*batch d_model"]:
    """:func:`project_out` for a direction already of unit norm and in ``acts``' dtype (the hot path of
    training-time ablation: three kernels)."""
    coeff = (acts * r).sum(dim=-1, keepdim=True)
    if mask is not None:
        coeff = coeff * mask.to(coeff.dtype).unsqueeze(-1)  # no copy when the dtype already matches
    return torch.addcmul(acts, coeff, r, value=-1)


def project_out_subspace(
    acts: Float[Tensor, "*batch d_model"],
    basis: Float[Tensor, "k d_model"],
    mask: "Float[Tensor, '*batch'] | None" = None,
) -> Float[Tensor, "*batch d_model"]:
    """Remove the span of the rows of ``basis`` (orthonormalised here by QR) from ``acts``."""
    q, _ = torch.linalg.qr(basis.to(torch.float32).T)  # (d_model, k), orthonormal columns
    q = q.T.to(acts.dtype)  # (k, d_model)
    coeffs = acts @ q.T  # (*batch, k)
    if mask is not None:
        coeffs = coeffs * mask.to(acts.dtype).unsqueeze(-1)
    return acts - coeffs @ q


def add_direction(
    acts: Float[Tensor, "*batch d_model"],
    direction: Float[Tensor, "d_model"],
    coeff: float = 1.0,
) -> Float[Tensor, "*batch d_model"]:
    """Return ``acts + coeff * direction`` (the direction is used as given, not normalised)."""
    return acts + coeff * direction.to(acts.dtype)
