"""Token plumbing for suffix attacks (GCG, soft prompts): prompt = before + suffix + after, then a target.

``before`` is the chat prefix and the instruction, ``after`` the template's post-instruction tokens,
``target`` the answer opening the attack wants (e.g. "Sure, here is"). Everything is built from token
ids, so the optimised suffix is exactly what the model sees.
"""

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor
from transformers import DynamicCache

from drtk.attacks.base import left_pad


@dataclass(frozen=True)
class SuffixTask:
    before: tuple[tuple[int, ...], ...]  # one per prompt
    after: tuple[int, ...]
    target: tuple[int, ...]

    def prompt_ids(self, suffixes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """Whole formatted prompts with one suffix per prompt."""
        return [b + tuple(s) + self.after for b, s in zip(self.before, suffixes)]


def build_task(model: Any, prompts: Sequence[str], target: str) -> SuffixTask:
    tok = model.tokenizer
    enc = lambda text: tuple(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    before = tuple(enc(model.chat.prefix + p) for p in prompts)
    return SuffixTask(before, tuple(model.chat.post_instruction_ids), enc(target))


def init_suffix(model: Any, n: int, init: str) -> list[int]:
    ids = model.tokenizer((init * n), add_special_tokens=False)["input_ids"]
    if len(ids) < n:
        raise ValueError(f"init text {init!r} x {n} gives only {len(ids)} tokens")
    return list(ids[:n])


def target_loss(
    model: Any, rows: Sequence[Sequence[int]], target: Sequence[int], *, soft: "Tensor | None" = None, gap: int = 0
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of ``target`` after each row, and whether greedy decoding would emit it.

    Args:
        rows: token ids of whole prompts (the target is appended here; rows are left-padded).
        soft: optional ``(batch or 1, n, d_model)`` vectors that replace the input embeddings of the ``n``
            positions that end ``gap`` tokens before the target (the suffix, when ``gap`` = len(after)).

    Returns:
        ``(loss (batch,), exact (batch,) bool)``.
    """
    t = len(target)
    ids, mask = left_pad([tuple(r) + tuple(target) for r in rows], model.tokenizer.pad_token_id, model.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs: dict[str, Any] = {"input_ids": ids}
    if soft is not None:
        base = model.hf.get_input_embeddings()(ids)  # (batch, pos, d_model)
        end = ids.shape[1] - t - gap
        soft = soft.to(base.dtype).expand(len(rows), -1, -1)
        kwargs = {"inputs_embeds": torch.cat([base[:, : end - soft.shape[1]], soft, base[:, end:]], dim=1)}
    with model.plain() as hf:
        logits = hf(attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=t + 1, **kwargs).logits
    return _target_scores(logits, target)


def _target_scores(logits: Tensor, target: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of ``target`` and exact greedy match, from logits over the last ``len(target) + 1``
    positions (the first ``len(target)`` of them predict the target tokens)."""
    pred = logits[:, :-1].float()  # (batch, t, vocab)
    tgt = torch.tensor(list(target), device=pred.device).expand(pred.shape[0], len(target))
    loss = torch.nn.functional.cross_entropy(pred.transpose(1, 2), tgt, reduction="none").mean(-1)
    return loss, (pred.argmax(-1) == tgt).all(-1)


@torch.no_grad()
def prefix_cache(model: Any, before: Sequence[int]) -> DynamicCache:
    """Keys and values of the shared prompt start ``before`` (one row), for :func:`cached_target_loss`."""
    ids = torch.tensor([list(before)], device=model.device)
    cache = DynamicCache()
    with model.plain() as hf:
        hf(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(ids.shape[1], device=model.device)[None],
           past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache


@torch.no_grad()
def cached_target_loss(model: Any, cache: DynamicCache, n_before: int, tails: Sequence[Sequence[int]],
                       target: Sequence[int]) -> tuple[Tensor, Tensor]:
    """:func:`target_loss` for rows ``before + tail`` that share ``before`` (already in ``cache``) and whose
    tails have one length: only the tails and the target go through the model, which makes candidate scoring
    several times cheaper when the instruction is long and the suffix short."""
    lengths = {len(t) for t in tails}
    if len(lengths) != 1:
        raise ValueError(f"cached_target_loss needs tails of one length, got lengths {sorted(lengths)}")
    ids = torch.tensor([list(r) + list(target) for r in tails], device=model.device)
    b, n = ids.shape
    batch_cache = copy.deepcopy(cache)  # the forward appends to the cache it is given
    batch_cache.batch_repeat_interleave(b)
    mask = torch.ones(b, n_before + n, dtype=torch.long, device=model.device)
    pos = torch.arange(n_before, n_before + n, device=model.device).expand(b, n)
    with model.plain() as hf:
        logits = hf(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=batch_cache, use_cache=True,
                    logits_to_keep=len(target) + 1).logits
    return _target_scores(logits, target)
