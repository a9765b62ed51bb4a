"""Weight orthogonalization: directional ablation baked into the weights.

Every write into the residual stream (token embedding, each attention output projection, each MLP
output projection) has its output rows projected off ``r``: ``W <- W - r_hat r_hat^T W``. The residual
stream then never holds a component along ``r``, which is exactly what activation ablation at every
``resid_pre``, ``attn_out`` and ``mlp_out`` does. With tied embeddings the unembedding is untied first,
so the model's read-out stays as it was.
"""

import copy
from typing import Any, Callable

import torch
from jaxtyping import Float
from torch import Tensor

from drtk.errors import DirectionMismatchError
from drtk.interventions.core import project_out


def _writers(model: Any) -> list[torch.nn.Module]:
    """The modules whose outputs are added to the residual stream (found through the bridge)."""
    bridge = model.bridge
    mods = [bridge.embed.original_component]
    for block in bridge.blocks:
        mods.append(block.attn.o.original_component)
        mods.append(block.mlp.out.original_component)
    return mods


def _untie(model: Any) -> None:
    hf = model.hf
    out = hf.get_output_embeddings()
    if out is not None and out.weight is hf.get_input_embeddings().weight:
        out.weight = torch.nn.Parameter(out.weight.detach().clone())
        hf.config.tie_word_embeddings = False


@torch.no_grad()
def orthogonalize(
    model: Any, direction: Float[Tensor, "d_model"], *, inplace: bool = False
) -> "Any | Callable[[], None]":
    """Remove ``direction`` from everything that writes into the residual stream.

    Args:
        model: a :class:`~drtk.models.ChatModel`.
        direction: ``(d_model,)``; normalised here.
        inplace: edit ``model`` itself and return an ``undo()`` callable; otherwise edit a copy and
            return the copy (``model`` untouched).
    """
    if direction.ndim != 1 or direction.shape[0] != model.d_model:
        raise DirectionMismatchError(
            f"direction has shape {tuple(direction.shape)} but the model has d_model {model.d_model}; "
            "was it computed on another model? (orthogonalization takes one direction)"
        )
    target = model if inplace else copy.deepcopy(model)
    hf = target.hf
    saved_out = hf.get_output_embeddings().weight if hf.get_output_embeddings() is not None else None
    tied = hf.config.tie_word_embeddings
    _untie(target)
    r = direction.detach().to(device=target.device, dtype=torch.float32)
    originals: list[tuple[torch.nn.Parameter, Tensor]] = []
    for mod in _writers(target):
        w = mod.weight
        originals.append((w, w.detach().clone()))
        if isinstance(mod, torch.nn.Embedding):
            w.copy_(project_out(w.float(), r).to(w.dtype))  # rows are d_model vectors
        else:  # Linear: weight (d_model_out, d_in); project each column
            w.copy_(project_out(w.float().T, r).T.to(w.dtype))
        bias = getattr(mod, "bias", None)
        if bias is not None:
            originals.append((bias, bias.detach().clone()))
            bias.copy_(project_out(bias.float(), r).to(bias.dtype))
    if not inplace:
        return target

    def undo() -> None:
        with torch.no_grad():
            for p, value in originals:
                p.copy_(value)
            if tied and saved_out is not None:
                hf.get_output_embeddings().weight = saved_out
                hf.config.tie_word_embeddings = True

    return undo
