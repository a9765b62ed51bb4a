"""Capability retention: how far a model's next-token distributions moved from a reference model's.

The reference answers each benign prompt greedily (``n_tokens`` tokens, up to its end-of-turn); both
models are then teacher-forced on the reference's own answer, and at every answer position we compare
the next-token distributions: ``KL(reference || model)`` averaged over all answer tokens, and the
model's perplexity on the answers (next to the reference's own). The same machinery measures the cost of
an attack: the "reference" is then the unattacked model and the "model" the same model under the attack.
"""

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from drtk.attacks.base import left_pad
from drtk.errors import ConfigError, DataError
from drtk.generation import GenerationConfig, generate_ids


@dataclass(frozen=True)
class ReferenceAnswers:
    """The reference model's greedy answers and its log-probabilities along them.

    Attributes:
        prompts: the benign prompts.
        prompt_ids, answer_ids: token ids per prompt (answers end at the first end-of-turn, inclusive).
        logprobs: per prompt, ``(answer_len, vocab)`` reference log-probabilities predicting each answer token.
        model_id: the reference model.
    """

    prompts: tuple[str, ...]
    prompt_ids: tuple[tuple[int, ...], ...]
    answer_ids: tuple[tuple[int, ...], ...]
    logprobs: tuple[Tensor, ...]
    model_id: str


@torch.no_grad()
def answer_logprobs(
    model: Any, prompt_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]], batch_size: int = 16
) -> list[Float[Tensor, "pos vocab"]]:
    """Teacher-forced log-probabilities of ``model`` at every answer position (under any active hooks)."""
    out: list[Tensor] = []
    for i in range(0, len(prompt_ids), batch_size):
        ans = answer_ids[i : i + batch_size]
        rows = [tuple(p) + tuple(a) for p, a in zip(prompt_ids[i : i + batch_size], ans)]
        ids, mask = left_pad(rows, model.tokenizer.pad_token_id, model.device)
        keep = max(len(a) for a in ans) + 1
        logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                          use_cache=False, logits_to_keep=keep).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        out.extend(logp[j, keep - len(a) - 1 : keep - 1].cpu() for j, a in enumerate(ans))
    return out


@torch.no_grad()
def reference_answers(reference: Any, prompts: Sequence[str], *, n_tokens: int = 16, batch_size: int = 16) -> ReferenceAnswers:
    """Greedy answers of ``reference`` (``n_tokens`` each) and its log-probabilities along them."""
    if not prompts:
        raise DataError("capability retention needs at least one benign prompt")
    cfg = GenerationConfig(max_new_tokens=n_tokens, batch_size=batch_size)
    eos = {reference.tokenizer.eos_token_id, reference.tokenizer.pad_token_id}
    p_ids, a_ids = [], []
    for i in range(0, len(prompts), batch_size):
        batch = reference.tokenize(list(prompts[i : i + batch_size]))
        new = generate_ids(reference, batch.input_ids, batch.attention_mask, cfg)
        for row, m, ans in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(), new.tolist()):
            p_ids.append(tuple(t for t, keep in zip(row, m) if keep))
            cut = next((j + 1 for j, t in enumerate(ans) if t in eos), len(ans))
            a_ids.append(tuple(ans[:cut]))
    lp = answer_logprobs(reference, p_ids, a_ids, batch_size)
    return ReferenceAnswers(tuple(prompts), tuple(p_ids), tuple(a_ids), tuple(lp), reference.model_id)


def _check_vocab(model: Any, ref: ReferenceAnswers) -> None:
    if ref.logprobs and model.d_vocab != ref.logprobs[0].shape[-1]:
        raise ConfigError(
            f"{model.model_id!r} has a vocabulary of {model.d_vocab} but the reference {ref.model_id!r} has "
            f"{ref.logprobs[0].shape[-1]}; KL needs a model and reference with the same tokenizer"
        )


def kl_to_reference(model: Any, ref: ReferenceAnswers, batch_size: int = 16) -> float:
    """Mean ``KL(reference || model)`` over every answer token of every prompt."""
    _check_vocab(model, ref)
    lp = answer_logprobs(model, ref.prompt_ids, ref.answer_ids, batch_size)
    kl = [(r.exp() * (r - m)).sum(-1) for r, m in zip(ref.logprobs, lp)]
    return float(torch.cat(kl).mean())


def perplexity(model: Any, ref: ReferenceAnswers, batch_size: int = 16) -> float:
    """Perplexity of ``model`` on the reference's answers (exp of the mean token NLL)."""
    _check_vocab(model, ref)
    lp = answer_logprobs(model, ref.prompt_ids, ref.answer_ids, batch_size)
    nll = [-m.gather(-1, torch.tensor(a)[:, None]).squeeze(-1) for m, a in zip(lp, ref.answer_ids)]
    return float(math.exp(torch.cat(nll).mean()))


def reference_perplexity(ref: ReferenceAnswers) -> float:
    """The reference's own perplexity on its answers (from the stored log-probabilities)."""
    nll = [-r.gather(-1, torch.tensor(a)[:, None]).squeeze(-1) for r, a in zip(ref.logprobs, ref.answer_ids)]
    return float(math.exp(torch.cat(nll).mean()))
