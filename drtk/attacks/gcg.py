"""``gcg``: Greedy Coordinate Gradient adversarial suffixes (Zou et al., 2023), through the hooked model.

Each step: (1) the gradient of the target loss with respect to a one-hot encoding of the suffix tokens
(via the embedding matrix) ranks, per position, the ``top_k`` tokens most likely to lower the loss;
(2) ``candidates`` single-token swaps are drawn from those (with the passed generator) and scored
exactly in batches; (3) the best swap is kept. The target is an answer opening such as "Sure, here is".
The search stops early when greedy decoding emits the target for every prompt of the group, or (with
``check_every``) when a short greedy completion of every prompt of the group holds no refusal phrase: an
answer that opens "Sure, here are" or "To do that, ..." is as much a success as the exact target. The
final verdict is still the evaluation judge's, on the full-length completion.

Each prompt's start (chat prefix and instruction) goes through the model once per group: candidates are
scored from its keys and values, so only the suffix, the template's tail and the target are computed for
each candidate and prompt.

Budget: ``steps x candidates`` scored suffixes per group (one group per prompt, or one for all prompts
with ``universal=True``, which is far cheaper on a CPU). Candidates whose text does not tokenise back to
the same ids are skipped, so a found suffix also works when pasted as text.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from drtk.attacks._suffix import build_task, cached_target_loss, init_suffix, prefix_cache, target_loss
from drtk.attacks.base import Attack, AttackContext, AttackInputs, left_pad, register_attack
from drtk.errors import ConfigError
from drtk.generation import GenerationConfig, generate_ids
from drtk.judges import no_answer

logger = logging.getLogger(__name__)


def _rng(context: AttackContext, seed: int) -> torch.Generator:
    return context.generator if context.generator is not None else torch.Generator().manual_seed(seed)


@register_attack
@dataclass(frozen=True, kw_only=True)
class GCG(Attack):
    """Attributes:
    steps: optimisation steps per group. candidates: suffixes scored per step. top_k: tokens kept per
    position from the gradient. suffix_tokens: suffix length. target: the answer opening to elicit.
    universal: one suffix for all prompts (else one per prompt). batch_size: rows per scoring forward.
    init: text repeated to initialise the suffix. seed: used when the context has no generator.
    check_every: every this many steps, decode ``check_tokens`` greedy tokens with the best suffix and stop
    when none holds a refusal phrase (0: stop only on the exact target).
    """

    name = "gcg"
    steps: int = 50
    candidates: int = 64
    top_k: int = 64
    suffix_tokens: int = 16
    target: str = "Sure, here is"
    universal: bool = False
    batch_size: int = 64
    init: str = " !"
    seed: int = 0
    check_every: int = 0
    check_tokens: int = 32

    def __post_init__(self) -> None:
        for f in ("steps", "candidates", "top_k", "suffix_tokens", "batch_size", "check_tokens"):
            if getattr(self, f) < 1:
                raise ConfigError(f"gcg {f} must be >= 1, got {getattr(self, f)}")
        if self.check_every < 0:
            raise ConfigError(f"gcg check_every must be >= 0 (0: off), got {self.check_every}")
        if not self.target:
            raise ConfigError("gcg target must be a non-empty string, e.g. 'Sure, here is'")

    @property
    def budget(self) -> int:
        """Scored candidate suffixes allowed per group."""
        return self.steps * self.candidates

    @torch.no_grad()
    def _scores(self, model: Any, task: Any, group: list[int], suffixes: list[list[int]],
                caches: dict[int, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss (mean over the group's prompts) and all-prompts-exact flag per suffix. ``caches`` holds each
        prompt's start (filled on first use); the suffixes share one length."""
        tails = [tuple(s) + task.after for s in suffixes]
        losses, exact = [], []
        for g in group:
            if g not in caches:
                caches[g] = prefix_cache(model, task.before[g])
            scored = [cached_target_loss(model, caches[g], len(task.before[g]), tails[i : i + self.batch_size], task.target)
                      for i in range(0, len(tails), self.batch_size)]
            losses.append(torch.cat([loss for loss, _ in scored]))
            exact.append(torch.cat([ok for _, ok in scored]))
        return torch.stack(losses, -1).mean(-1), torch.stack(exact, -1).all(-1)

    def _optimise(self, model: Any, task: Any, group: list[int], gen: torch.Generator) -> dict[str, Any]:
        tok = model.tokenizer
        E = model.hf.get_input_embeddings().weight  # (vocab, d_model)
        banned = torch.tensor(sorted(set(tok.all_special_ids)), device=model.device)
        suffix = init_suffix(model, self.suffix_tokens, self.init)
        caches: dict[int, Any] = {}
        best_loss, exact = self._scores(model, task, group, [suffix], caches)
        best = {"suffix": suffix, "loss": float(best_loss[0]), "success": bool(exact[0]), "steps": 0, "scored": 1}
        n = len(suffix)
        for step in range(self.steps):
            if best["success"]:
                break
            one_hot = torch.zeros(n, E.shape[0], device=model.device, dtype=E.dtype)
            one_hot.scatter_(1, torch.tensor(suffix, device=model.device)[:, None], 1.0)
            one_hot.requires_grad_(True)
            rows = [task.before[g] + tuple(suffix) + task.after for g in group]
            with torch.enable_grad():
                loss, _ = target_loss(model, rows, task.target, soft=(one_hot @ E)[None], gap=len(task.after))
                grad, = torch.autograd.grad(loss.mean(), one_hot)  # (n, vocab)
            grad[:, banned] = float("inf")
            top = (-grad).topk(self.top_k, dim=-1).indices  # (n, top_k)
            where = torch.randint(n, (self.candidates,), generator=gen, device=gen.device)
            which = torch.randint(self.top_k, (self.candidates,), generator=gen, device=gen.device)
            cands = []
            for p, w in zip(where.tolist(), which.tolist()):
                c = list(suffix)
                c[p] = int(top[p, w])
                if c != suffix and tok(tok.decode(c), add_special_tokens=False)["input_ids"] == c:
                    cands.append(c)
            if not cands:
                continue
            losses, ok = self._scores(model, task, group, cands, caches)
            i = int(losses.argmin())
            suffix = cands[i]
            best["scored"] += len(cands)
            best["steps"] = step + 1
            if float(losses[i]) < best["loss"] or bool(ok[i]):
                best.update(suffix=suffix, loss=float(losses[i]), success=bool(ok[i]))
            if self.check_every and not best["success"] and (step + 1) % self.check_every == 0:
                best["success"] = best["complied"] = self._complies(model, task, group, best["suffix"])
        return best

    @torch.no_grad()
    def _complies(self, model: Any, task: Any, group: list[int], suffix: list[int]) -> bool:
        """Whether a short greedy completion of every prompt of the group has text and no refusal phrase."""
        ids, mask = left_pad([task.before[g] + tuple(suffix) + task.after for g in group], model.tokenizer.pad_token_id,
                             model.device)
        new = generate_ids(model, ids, mask, GenerationConfig(max_new_tokens=self.check_tokens, batch_size=len(group)))
        texts = model.tokenizer.batch_decode(new, skip_special_tokens=True)
        return not any(map(no_answer, texts))

    def prepare(self, model: Any, prompts: Sequence[str], context: AttackContext) -> AttackInputs:
        task = build_task(model, prompts, self.target)
        gen = _rng(context, self.seed)
        groups = [list(range(len(prompts)))] if self.universal else [[i] for i in range(len(prompts))]
        suffixes: list[list[int]] = [[] for _ in prompts]
        found = []
        for i, group in enumerate(groups):
            t0 = time.perf_counter()
            res = self._optimise(model, task, group, gen)
            logger.info("gcg group %d/%d: %s after %d steps, %d suffixes scored, loss %.3f, %.0fs", i + 1,
                        len(groups), "success" if res["success"] else "no success", res["steps"], res["scored"],
                        res["loss"], time.perf_counter() - t0)
            found.append({k: v for k, v in res.items() if k != "suffix"} | {"text": model.tokenizer.decode(res["suffix"])})
            for g in group:
                suffixes[g] = res["suffix"]
        text = [model.tokenizer.decode(s) for s in suffixes]
        meta = {"groups": found, "budget_per_group": self.budget, "target": self.target}
        return AttackInputs(tuple(p + t for p, t in zip(prompts, text)), ids=tuple(task.prompt_ids(suffixes)),
                            shown=tuple(text), metadata=meta)
