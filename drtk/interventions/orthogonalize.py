"""Weight orthogonalization: directional ablation baked into the weights.

Every write into the residual stream (token embedding, each attention output projection, each MLP
output projection) has its output rows projected off ``r``: ``W <- W - r_hat r_hat^T W``. The residual
stream then never holds a component along ``r``, which is exactly what activation ablation at every
``resid_pre``, ``attn_out`` and ``mlp_out`` does. With tied embeddings the unembedding is untied first,
so the model's read-out stays as it was.

The equivalence needs each writer's output to reach the residual stream as it is. Architectures that
normalise the attention and MLP outputs first (Gemma 2 and 3, OLMo 2: an ``ln1_post`` / ``ln2_post`` norm
on the write path) rescale every coordinate by its own gain after the projection, so no edit of the
projections keeps the direction out of the stream. There :func:`orthogonalize` refuses unless asked for
the approximation (``approximate=True``, the projections edited anyway); activation ablation stays exact.
"""

import copy
import logging
from typing import Any, Callable

import torch
from jaxtyping import Float
from torch import Tensor

from drtk.errors import ConfigError, DirectionMismatchError
from drtk.interventions.core import project_out

logger = logging.getLogger(__name__)


def _writers(model: Any) -> list[torch.nn.Module]:
    """The modules whose outputs are added to the residual stream (found through the bridge)."""
    bridge = model.bridge
    mods = [bridge.embed.original_component]
    for block in bridge.blocks:
        mods.append(block.attn.o.original_component)
        mods.append(block.mlp.out.original_component)
    return mods


def write_norms(model: Any) -> list[str]:
    """The norms between a residual writer and the residual stream (``ln1_post``, ``ln2_post`` ...), by name;
    empty when the attention and MLP outputs are added as they are."""
    return sorted({name for block in model.bridge.blocks for name, _ in block.named_children()
                   if name.startswith("ln") and name.endswith("_post")})


def check_exact(model: Any, approximate: bool = False) -> list[str]:
    """Raise :class:`ConfigError` when weight orthogonalization cannot equal activation ablation on ``model``
    (see the module docstring), unless ``approximate``; return the norms in the way (:func:`write_norms`)."""
    norms = write_norms(model)
    if norms and not approximate:
        raise ConfigError(
            f"{model.model_id} normalises its attention and MLP outputs ({', '.join(norms)}) before adding them to "
            "the residual stream, so editing the output projections cannot remove the direction from it: weight "
            "orthogonalization is not exact on this architecture. Use activation ablation (drtk.ablation, the "
            "direction-ablation attack), which is, or ask for the approximation (approximate=True; "
            "orthogonalize:approximate=1)")
    return norms


def _untie(model: Any) -> None:
    hf = model.hf
    out = hf.get_output_embeddings()
    if out is not None and out.weight is hf.get_input_embeddings().weight:
        out.weight = torch.nn.Parameter(out.weight.detach().clone())
        hf.config.tie_word_embeddings = False


@torch.no_grad()
def orthogonalize(
    model: Any, direction: Float[Tensor, "d_model"], *, inplace: bool = False, approximate: bool = False
) -> "Any | Callable[[], None]":
    """Remove ``direction`` from everything that writes into the residual stream.

    Args:
        model: a :class:`~drtk.models.ChatModel`.
        direction: ``(d_model,)``; normalised here.
        inplace: edit ``model`` itself and return an ``undo()`` callable; otherwise edit a copy and
            return the copy (``model`` untouched).
        approximate: on an architecture that normalises what each block writes (Gemma 2 and 3, OLMo 2), edit
            the projections anyway; the residual stream then keeps part of the direction. Without it such a
            model raises :class:`~drtk.errors.ConfigError`.
    """
    if direction.ndim != 1 or direction.shape[0] != model.d_model:
        raise DirectionMismatchError(
            f"direction has shape {tuple(direction.shape)} but the model has d_model {model.d_model}; "
            "was it computed on another model? (orthogonalization takes one direction)"
        )
    if check_exact(model, approximate):  # asked for the approximation on such a model
        logger.warning("%s normalises what each block writes: the orthogonalized weights only approximate "
                       "activation ablation", model.model_id)
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
