"""Difference-in-means candidates over layers x post-instruction positions.

``r[i, l] = mean_harmful h[i, l] - mean_harmless h[i, l]`` for every post-instruction position ``i`` and
layer ``l`` (read at ``blocks.{l}.hook_resid_pre``). Means are accumulated in float64 batch by batch, so
memory does not grow with the number of prompts, and the forward pass stops after the last block's
input has been read (the unembedding is never computed).
"""

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from drtk.errors import DataError

logger = logging.getLogger(__name__)


def _batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def collect_post_instruction(
    model: Any,
    instructions: Sequence[str],
    *,
    batch_size: int = 32,
    reduce: str = "mean",
    n_post: "int | None" = None,
) -> Float[Tensor, "... post layer d_model"]:
    """Residual-stream inputs of every block at the post-instruction positions.

    Args:
        reduce: ``"mean"`` (streamed, float64 accumulation; returns ``(post, layer, d_model)``) or
            ``"none"`` (returns every prompt: ``(batch, post, layer, d_model)`` in float32).
        n_post: how many final positions to read (default: all post-instruction tokens).
    """
    if len(instructions) == 0:
        raise DataError("cannot collect activations for an empty prompt set")
    n = n_post or model.chat.n_post
    L, d = model.n_layers, model.d_model
    total = torch.zeros(n, L, d, dtype=torch.float64, device=model.device)
    rows: list[Tensor] = []
    current: dict[int, Tensor] = {}

    def make(layer: int):
        def hook(acts: Tensor, hook: Any) -> Tensor:
            current[layer] = acts[:, -n:, :].detach()
            return acts

        return hook

    hooks = [(f"blocks.{layer}.hook_resid_pre", make(layer)) for layer in range(L)]
    for chunk in _batches(list(instructions), batch_size):
        current.clear()
        model.run_to(model.tokenize(chunk), f"blocks.{L - 1}.hook_resid_pre", hooks)
        stacked = torch.stack([current[layer] for layer in range(L)], dim=2)  # (batch, post, layer, d)
        if reduce == "mean":
            total += stacked.sum(0, dtype=torch.float64)
        else:
            rows.append(stacked.float().cpu())
    if reduce == "mean":
        return (total / len(instructions)).float()
    return torch.cat(rows, dim=0)


@dataclass(frozen=True)
class Candidates:
    """Mean activations of both prompt sets and their differences.

    Attributes:
        harmful_mean, harmless_mean: ``(post, layer, d_model)``.
        n_harmful, n_harmless: prompts behind each mean.
        post_tokens: the post-instruction tokens as text (``"\\n"``, not byte-level BPE's ``"Ċ"``), in order
            (position ``-n_post .. -1``).
    """

    harmful_mean: Float[Tensor, "post layer d_model"]
    harmless_mean: Float[Tensor, "post layer d_model"]
    n_harmful: int
    n_harmless: int
    post_tokens: tuple[str, ...]

    @property
    def diffs(self) -> Float[Tensor, "post layer d_model"]:
        return self.harmful_mean - self.harmless_mean

    @property
    def n_post(self) -> int:
        return self.harmful_mean.shape[0]

    @property
    def n_layers(self) -> int:
        return self.harmful_mean.shape[1]

    def position_label(self, index: int) -> str:
        """``index`` counts from 0 over the post-instruction tokens; the label shows offset and token."""
        return f"{index - self.n_post} {self.post_tokens[index]!r}"

    def vector(self, position: int, layer: int) -> Float[Tensor, "d_model"]:
        """The candidate at ``position`` (negative offset, e.g. -1 = last token) and ``layer``."""
        return self.diffs[position, layer]


def compute_candidates(
    model: Any, harmful: Sequence[str], harmless: Sequence[str], *, batch_size: int = 32
) -> Candidates:
    """Difference-in-means candidates for every (post-instruction position, layer)."""
    if len(harmful) == 0 or len(harmless) == 0:
        side = "harmful" if len(harmful) == 0 else "harmless"
        raise DataError(
            f"the {side} prompt set is empty; difference-in-means needs prompts on both sides "
            "(pass harmful= and harmless= sets with at least one prompt each)"
        )
    hm = collect_post_instruction(model, harmful, batch_size=batch_size)
    hl = collect_post_instruction(model, harmless, batch_size=batch_size)
    tokens = model.token_texts(model.chat.post_instruction_ids)
    return Candidates(hm.cpu(), hl.cpu(), len(harmful), len(harmless), tokens)


@torch.no_grad()
def projections_by_layer(
    model: Any, instructions: Sequence[str], direction: Tensor, *, position: int = -1, batch_size: int = 32
) -> Float[Tensor, "batch layer"]:
    """Projection of each prompt's residual stream (block input, one post-instruction position) onto the
    unit ``direction`` at every layer. ``direction`` may be ``(d_model,)`` or per layer ``(layer, d_model)``.
    A layer where a per-layer direction is zero projects to 0 there: a difference of means at the embedding,
    where every prompt's post-instruction token is the same template token, has no direction to read."""
    acts = collect_post_instruction(model, instructions, batch_size=batch_size, reduce="none")[:, position]
    r = direction.float().cpu()
    r = r / r.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return torch.einsum("bld,...ld->bl", acts, r if r.ndim == 2 else r[None].expand(acts.shape[1], -1))


def probe_ceiling(
    model: Any,
    harmful: Sequence[str],
    benign: Sequence[str],
    harmful_test: Sequence[str],
    benign_tests: "dict[str, Sequence[str]]",
    *,
    position: int = -1,
    layers: "Sequence[int] | None" = None,
    batch_size: int = 32,
) -> Any:
    """:func:`~drtk.directions.separation.probe_by_layer` on the model's own residual stream (block input at
    one post-instruction position): logistic probes fitted on ``harmful`` vs ``benign`` prompts, read on the
    held-out ones. One row per layer (a ``pandas.DataFrame``)."""
    from drtk.directions.separation import probe_by_layer

    def acts(prompts: Sequence[str]) -> Tensor:
        return collect_post_instruction(model, prompts, batch_size=batch_size, reduce="none")[:, position]

    return probe_by_layer(acts(harmful), acts(benign), acts(harmful_test),
                          {name: acts(prompts) for name, prompts in benign_tests.items()}, layers=layers)

