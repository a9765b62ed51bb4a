"""Batched, KV-cached generation that runs under any active drtk hooks.

The loop calls the wrapped Hugging Face model directly, so hooks registered on the bridge fire at every
step (during decoding they see one new position at a time). Batches are left-padded and position ids
skip the padding, so a prompt generates the same text alone or in a batch. Sampling draws from a passed
``torch.Generator``; the global RNG is never touched.
"""

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from drtk.errors import ConfigError, DrtkError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate.

    Attributes:
        max_new_tokens: tokens generated after the prompt (and after any prefill). Short budgets miss
            delayed refusals and delayed compliance; evaluation uses at least 64.
        batch_size: prompts per forward pass.
        do_sample: greedy when False.
        temperature: softmax temperature when sampling.
        top_p: nucleus mass when sampling (1.0 = off).
    """

    max_new_tokens: int = 64
    batch_size: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")


def _next_token(logits: Tensor, cfg: GenerationConfig, generator: "torch.Generator | None") -> Tensor:
    if not cfg.do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < cfg.top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    if generator is not None and generator.device != probs.device:  # e.g. a CPU generator, a CUDA model
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_ids(
    model: Any, input_ids: Tensor, attention_mask: Tensor, cfg: GenerationConfig, generator: "torch.Generator | None" = None
) -> Tensor:
    """Generate for one left-padded batch; returns the new token ids ``(batch, max_new_tokens)``
    (finished rows are filled with the pad id)."""
    from transformers import DynamicCache

    longest = int(attention_mask.sum(-1).max()) + cfg.max_new_tokens
    if model.n_ctx is not None and longest > model.n_ctx:
        raise ConfigError(f"a prompt of {longest - cfg.max_new_tokens} tokens plus {cfg.max_new_tokens} new tokens passes "
                          f"{model.model_id!r}'s context of {model.n_ctx} tokens; shorten the prompt or lower max_new_tokens")
    eos_ids = _eos_ids(model)
    pad = model.tokenizer.pad_token_id
    new = []
    with model.plain() as hf:  # hooks registered: the bridged model, where they fire
        cache = DynamicCache()
        mask = attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = hf(input_ids=input_ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                 logits_to_keep=1)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for step in range(cfg.max_new_tokens):
            tok = _next_token(out.logits[:, -1], cfg, generator)
            tok = torch.where(done, torch.full_like(tok, pad), tok)
            new.append(tok)
            done = done | torch.isin(tok, eos_ids)
            if bool(done.all()) or step == cfg.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            out = hf(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, past_key_values=out.past_key_values,
                     use_cache=True)
    ids = torch.stack(new, dim=1)
    if ids.shape[1] < cfg.max_new_tokens:
        fill = torch.full((ids.shape[0], cfg.max_new_tokens - ids.shape[1]), pad, dtype=ids.dtype, device=ids.device)
        ids = torch.cat([ids, fill], dim=1)
    return ids


def _eos_ids(model: Any) -> Tensor:
    ids = {model.tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model.hf, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    ids.discard(None)
    return torch.tensor(sorted(ids), device=model.device)


def generate(
    model: Any,
    instructions: Sequence[str],
    *,
    prefills: "Sequence[str] | None" = None,
    config: "GenerationConfig | None" = None,
    generator: "torch.Generator | None" = None,
    texts: "Sequence[str] | None" = None,
    progress: bool = False,
) -> list[str]:
    """Generate a completion for each instruction, through the chat template.

    Args:
        model: a :class:`~drtk.models.ChatModel`; any active hook scope applies.
        instructions: user messages.
        prefills: optional text that starts each assistant turn (the prefilling attack); it is part of
            the prompt and not repeated in the returned completion.
        config: a :class:`GenerationConfig` (default: greedy, 64 new tokens).
        generator: RNG for sampling.
        texts: already formatted prompts instead of ``instructions`` (e.g. with an adversarial suffix).

    Returns:
        The completions, special tokens removed, one per instruction, in order.
    """
    cfg = config or GenerationConfig()
    prompts = list(texts) if texts is not None else model.format(instructions, prefills)
    if not prompts:
        raise DrtkError("generate() got no prompts")
    results: list[str] = [""] * len(prompts)
    # Sort by length so batches pad little; restore the order at the end.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="generate", leave=False)
    for idx in iterator:
        batch = model.tokenize_texts([prompts[i] for i in idx])
        ids = generate_ids(model, batch.input_ids, batch.attention_mask, cfg, generator)
        for i, text in zip(idx, model.tokenizer.batch_decode(ids, skip_special_tokens=True)):
            results[i] = text
    return results
