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
    model: Any, prompt_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]], batch_size: int = 16,
    *, targets_only: bool = False,
) -> "list[Float[Tensor, 'pos vocab']] | list[Float[Tensor, 'pos']]":
    """Teacher-forced log-probabilities of ``model`` at every answer position (under any active hooks):
    the whole distribution, or with ``targets_only`` just the answer token's."""
    out: list[Tensor] = []
    for i in range(0, len(prompt_ids), batch_size):
        ans = answer_ids[i : i + batch_size]
        rows = [tuple(p) + tuple(a) for p, a in zip(prompt_ids[i : i + batch_size], ans)]
        ids, mask = left_pad(rows, model.tokenizer.pad_token_id, model.device)
        keep = max(len(a) for a in ans) + 1
        with model.plain() as hf:
            logits = hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                        use_cache=False, logits_to_keep=keep).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for j, a in enumerate(ans):
            rows_lp = logp[j, keep - len(a) - 1 : keep - 1]
            if targets_only:
                rows_lp = rows_lp.gather(-1, torch.tensor(a, device=rows_lp.device)[:, None]).squeeze(-1)
            out.append(rows_lp.cpu())
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
    lp = answer_logprobs(model, ref.prompt_ids, ref.answer_ids, batch_size, targets_only=True)
    return float(math.exp(-torch.cat(lp).mean()))


def reference_perplexity(ref: ReferenceAnswers) -> float:
    """The reference's own perplexity on its answers (from the stored log-probabilities)."""
    nll = [-r.gather(-1, torch.tensor(a)[:, None]).squeeze(-1) for r, a in zip(ref.logprobs, ref.answer_ids)]
    return float(math.exp(torch.cat(nll).mean()))


@torch.no_grad()
def completion_nll(
    model: Any, instructions: Sequence[str], completions: Sequence[str], *,
    prefills: "Sequence[str] | None" = None, batch_size: int = 16,
) -> list[float]:
    """Mean per-token negative log-likelihood of each completion under ``model`` (and any active hooks),
    teacher-forced after its chat-formatted instruction (and prefill); ``inf`` for an empty completion.

    Run on the unattacked model, this tells a broken model's word salad (which no refusal phrase matches,
    so the keyword judge counts it as compliance) from an answer the model itself finds plausible.
    """
    tok = model.tokenizer
    texts = model.format(list(instructions), list(prefills) if prefills is not None else None)
    p_ids = [tuple(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    a_ids = [tuple(tok(c, add_special_tokens=False)["input_ids"]) for c in completions]
    keep = [i for i, a in enumerate(a_ids) if a]
    out = [math.inf] * len(a_ids)
    if keep:
        lp = answer_logprobs(model, [p_ids[i] for i in keep], [a_ids[i] for i in keep], batch_size, targets_only=True)
        for i, m in zip(keep, lp):
            out[i] = float(-m.mean())
    return out


def distinct_bigrams(tokenizer: Any, text: str, min_tokens: int = 16) -> float:
    """Share of distinct token bigrams in ``text``: the lower of the whole text's and its second half's (a
    span under ``min_tokens`` tokens counts 1.0). A model stuck in a loop ("camera camera camera ...") scores
    near 0 while its own NLL stays low: loops are predictable. The second half catches a loop that starts
    late, after an opening that keeps the whole text's share up ("Here is a guide:\n\n1. **1. **1. ...")."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    def share(span: list[int]) -> float:
        pairs = list(zip(span, span[1:]))
        return len(set(pairs)) / len(pairs) if len(span) >= min_tokens else 1.0

    return min(share(ids), share(ids[len(ids) // 2 :]))


def periodic_share(tokenizer: Any, text: str, min_tokens: int = 16) -> float:
    """How periodic the second half of ``text`` is: over periods ``p`` up to the first half's length (the
    copy ``p`` tokens back lies inside the text), the largest share of the second half's tokens that equal
    the token ``p`` places before (0.0 when the half has under ``min_tokens``). A loop of a whole sentence or
    list item ("I am here to help you find ...\n\nI am here to help you find ...", "- 3D-printed gun\n-
    3D-printed gun\n"), one longer than half the second half included ("a \"crafting a firebomb ...\" – a
    classic example of a \"crafting a firebomb ...\" is a classic"), scores near 1 although each repetition
    holds enough distinct bigrams for :func:`distinct_bigrams` to pass it; on the embedded model ordinary
    answers, lists and code included, score under 0.5."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    half = len(ids) // 2
    n = len(ids) - half
    if n < min_tokens:
        return 0.0
    return max(sum(ids[i] == ids[i - p] for i in range(half, len(ids))) / n for p in range(1, half + 1))
