"""``embedding``: a continuous soft-prompt attack. ``suffix_tokens`` free vectors are placed after the
instruction in embedding space and optimised with Adam to make the model emit the target opening.

Stronger than any token attack (the vectors need not be tokens), so it bounds what input-side attacks can
do. Budget: ``steps`` gradient steps per group. Generation replaces the embeddings of placeholder tokens
with the optimised vectors through a scoped ``hook_embed`` hook on the prompt pass.
"""

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from drtk.attacks._suffix import build_task, init_suffix, target_loss
from drtk.attacks.base import Attack, AttackContext, AttackInputs, left_pad, register_attack
from drtk.errors import ConfigError
from drtk.generation import generate_ids
from drtk.interventions import hook_scope


@register_attack
@dataclass(frozen=True, kw_only=True)
class EmbeddingAttack(Attack):
    """Attributes:
    steps: Adam steps per group. lr: learning rate, relative to the mean embedding norm.
    suffix_tokens: number of soft vectors. target: the answer opening to elicit.
    universal: one soft suffix for all prompts (else one per prompt). init: placeholder text.
    """

    name = "embedding"
    steps: int = 30
    lr: float = 0.05
    suffix_tokens: int = 8
    target: str = "Sure, here is"
    universal: bool = False
    init: str = " !"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.suffix_tokens < 1 or self.lr <= 0:
            raise ConfigError(f"embedding needs steps >= 1, suffix_tokens >= 1, lr > 0; got {self.steps}, "
                              f"{self.suffix_tokens}, {self.lr}")

    def prepare(self, model: Any, prompts: Sequence[str], context: AttackContext) -> AttackInputs:
        task = build_task(model, prompts, self.target)
        E = model.hf.get_input_embeddings().weight.detach()
        placeholder = init_suffix(model, self.suffix_tokens, self.init)
        scale = float(E.norm(dim=-1).mean())
        groups = [list(range(len(prompts)))] if self.universal else [[i] for i in range(len(prompts))]
        soft = torch.empty(len(prompts), self.suffix_tokens, E.shape[1], device=model.device)
        trace = []
        for group in groups:
            vec = E[placeholder].clone().float().requires_grad_(True)  # (n, d_model)
            opt = torch.optim.Adam([vec], lr=self.lr * scale)
            rows = task.prompt_ids([placeholder] * len(prompts))
            rows = [rows[g] for g in group]
            with torch.enable_grad():
                for _ in range(self.steps):
                    loss, _ = target_loss(model, rows, task.target, soft=vec[None], gap=len(task.after))
                    opt.zero_grad()
                    loss.mean().backward()
                    opt.step()
            with torch.no_grad():
                loss, ok = target_loss(model, rows, task.target, soft=vec[None], gap=len(task.after))
            trace.append({"loss": float(loss.mean()), "success": bool(ok.all()), "steps": self.steps})
            soft[group] = vec.detach()
        ids = tuple(task.prompt_ids([placeholder] * len(prompts)))
        return AttackInputs(tuple(prompts), ids=ids, shown=(f"<{self.suffix_tokens} soft vectors>",) * len(prompts),
                            metadata={"groups": trace, "gap": len(task.after)}, extra=soft)

    def generate(self, model: Any, inputs: AttackInputs, context: AttackContext) -> list[str]:
        cfg, n, gap = context.generation, self.suffix_tokens, inputs.metadata["gap"]
        out: list[str] = []
        for i in range(0, len(inputs.ids), cfg.batch_size):
            ids, mask = left_pad(inputs.ids[i : i + cfg.batch_size], model.tokenizer.pad_token_id, model.device)
            soft = inputs.extra[i : i + cfg.batch_size]
            end = ids.shape[1] - gap

            def put(acts: torch.Tensor, hook: Any) -> torch.Tensor:
                if acts.shape[1] != ids.shape[1]:  # decoding steps: one new token, nothing to replace
                    return acts
                return torch.cat([acts[:, : end - n], soft.to(acts.dtype), acts[:, end:]], dim=1)

            with hook_scope(model, [("hook_embed", put)]):
                new = generate_ids(model, ids, mask, cfg, context.generator)
            out.extend(model.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out
