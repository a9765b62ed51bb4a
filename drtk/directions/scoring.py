"""Refusal scores from logits, so direction selection needs no generation.

The refusal score of a prompt is the log-odds that the model's next token is one of its refusal-opening
tokens: ``log p - log(1 - p)`` with ``p = sum_t softmax(logits)[t]`` over those tokens. The tokens are
read off the model: the first tokens of its own completions that the keyword judge calls refusals
(tokens that also open harmless answers often are dropped). A model that never refuses falls back to
the first tokens of drtk's refusal texts, with a warning.
"""

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from drtk.generation import GenerationConfig, generate_ids
from drtk.judges.keyword import is_refusal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefusalTokens:
    """Token ids that open a refusal, how they were found, and the refusal rate seen on the way."""

    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    source: str  # "model" or "fallback"
    refusal_rate: float
    n_prompts: int


def _first_tokens_and_texts(model: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int):
    firsts, texts = [], []
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    for i in range(0, len(prompts), batch_size):
        batch = model.tokenize(prompts[i : i + batch_size])
        ids = generate_ids(model, batch.input_ids, batch.attention_mask, cfg)
        firsts.extend(ids[:, 0].tolist())
        texts.extend(model.tokenizer.batch_decode(ids, skip_special_tokens=True))
    return firsts, texts


def find_refusal_tokens(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    min_count: int = 2,
) -> RefusalTokens:
    """Find the tokens this model opens its refusals with (greedy generation on the given prompts)."""
    h_first, h_text = _first_tokens_and_texts(model, harmful, max_new_tokens, batch_size)
    b_first, _ = _first_tokens_and_texts(model, harmless, max_new_tokens, batch_size)
    refused = [f for f, t in zip(h_first, h_text) if is_refusal(t)]
    rate = len(refused) / max(len(h_text), 1)
    benign_share = Counter(b_first)
    counts = Counter(refused)
    # Keep tokens that open refusals repeatedly and open harmless answers less often than refusals.
    n_ref, n_ben = max(len(refused), 1), max(len(b_first), 1)
    ids = [t for t, c in counts.most_common()
           if c >= min(min_count, len(refused)) and benign_share[t] / n_ben < c / n_ref]
    source = "model"
    if not ids:
        from drtk.data import load_texts

        openers = Counter()
        for text in load_texts("refusals"):
            first = model.tokenizer(text, add_special_tokens=False)["input_ids"][:1]
            openers.update(first)
        ids = [t for t, _ in openers.most_common(4)]
        source = "fallback"
        logger.warning(
            "the model refused %.0f%% of %d harmful prompts; refusal tokens fall back to drtk's refusal texts",
            100 * rate, len(h_text),
        )
    ids = ids[:8]
    return RefusalTokens(tuple(ids), model.token_texts(ids), source, rate, len(h_text))


def refusal_score(logits: Float[Tensor, "batch vocab"], token_ids: Sequence[int]) -> Float[Tensor, "batch"]:
    """Log-odds of the next token being a refusal token."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    idx = torch.tensor(list(token_ids), device=logits.device)
    log_p = torch.logsumexp(logp[:, idx], dim=-1)
    log_not = torch.log1p(-log_p.exp().clamp(max=1 - 1e-7))
    return log_p - log_not


def kl_divergence(
    ref_logits: Float[Tensor, "batch vocab"], logits: Float[Tensor, "batch vocab"]
) -> Float[Tensor, "batch"]:
    """``KL(ref || other)`` of next-token distributions, per row."""
    ref = torch.log_softmax(ref_logits.float(), dim=-1)
    other = torch.log_softmax(logits.float(), dim=-1)
    return (ref.exp() * (ref - other)).sum(-1)


@torch.no_grad()
def last_logits(model: Any, instructions: Sequence[str], batch_size: int = 32) -> Float[Tensor, "batch vocab"]:
    """Next-token logits after each formatted prompt (under whatever hooks are active)."""
    out = []
    for i in range(0, len(instructions), batch_size):
        out.append(model.last_logits(model.tokenize(instructions[i : i + batch_size])).float())
    return torch.cat(out)
