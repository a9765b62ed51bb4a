"""Token plumbing for suffix attacks (GCG, soft prompts): prompt = before + suffix + after, then a target.

``before`` is the chat prefix and the instruction, ``after`` the template's post-instruction tokens,
``target`` the answer opening the attack wants (e.g. "Sure, here is"). Everything is built from token
ids, so the optimised suffix is exactly what the model sees.
"""

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

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
    logits = model.hf(attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=t + 1, **kwargs).logits
    logits = logits[:, :-1].float()  # (batch, t, vocab): positions that predict the target tokens
    tgt = torch.tensor(list(target), device=model.device).expand(len(rows), t)
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, reduction="none").mean(-1)
    return loss, (logits.argmax(-1) == tgt).all(-1)
