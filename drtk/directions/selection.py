"""Selecting one refusal direction among the candidates, in the manner of Arditi et al. (2024).

For each candidate (post-instruction position, layer), on validation prompts:

* **bypass**: mean refusal score of harmful prompts with the candidate ablated at every site of every
  layer (lower is better);
* **induce**: mean refusal score of harmless prompts with the raw candidate added at its own layer
  (must be positive: the direction must be able to cause refusal);
* **KL**: mean ``KL(original || ablated)`` of next-token distributions on harmless prompts (must stay
  small: ablation must not wreck the model).

Candidates in the last ``1 - max_layer_fraction`` of layers are skipped. Scoring every candidate costs
three forward passes each, so by default the candidates are first ranked by how well they separate
the held-out harmful and harmless validation prompts (Cohen's d of the projection) and only the
``top_k`` best are scored fully; ``top_k=None`` scores all of them.

The bypass score reads only the first token. A small model whose refusals and answers open with the
same token ("I can't ..." / "I am writing ...") fools it, so the ``verify_top`` candidates with the best
bypass scores are checked by generation: greedy completions of the harmful validation prompts under
each one's ablation, judged by the keyword judge; the lowest refusal rate wins (ties: bypass).
"""

import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import pandas as pd
import torch

from drtk.data import PromptSet
from drtk.directions.artifact import Direction
from drtk.directions.candidates import Candidates, collect_post_instruction, compute_candidates
from drtk.directions.scoring import RefusalTokens, find_refusal_tokens, kl_divergence, last_logits, refusal_score
from drtk.errors import ConfigError, prompt_list
from drtk.interventions.hooks import ablation, actadd

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    """Knobs of direction selection.

    Attributes:
        max_layer_fraction: only layers below ``max_layer_fraction * n_layers`` are eligible (Arditi: 0.8).
        kl_threshold: candidates whose ablation KL exceeds this are filtered (Arditi: 0.1).
        induce_threshold: candidates whose induce score is not above this are filtered (Arditi: 0).
        top_k: score only the ``top_k`` best-separating candidates fully (None: all).
        actadd_coeff: multiple of the raw candidate added for the induce score.
        batch_size: prompts per forward pass.
        verify_top: with the bypass criterion, re-rank this many of the lowest-bypass candidates by the
            refusal rate of generated completions under their ablation (0: bypass score alone, as Arditi).
        verify_tokens: new tokens per completion in that check.
        criterion: ``"bypass"`` (Arditi: lowest bypass among candidates passing the filters),
            ``"separation"`` (highest held-out Cohen's d), or ``"auto"``: bypass when the model refuses at
            least half of the harmful validation prompts, else separation (a model that does not refuse
            has no refusal to bypass, and its bypass scores are noise).
    """

    max_layer_fraction: float = 0.8
    kl_threshold: float = 0.1
    induce_threshold: float = 0.0
    top_k: "int | None" = 24
    actadd_coeff: float = 1.0
    batch_size: int = 32
    verify_top: int = 4
    verify_tokens: int = 24
    criterion: str = "auto"

    def __post_init__(self) -> None:
        if not 0 < self.max_layer_fraction <= 1:
            raise ConfigError(f"max_layer_fraction must be in (0, 1], got {self.max_layer_fraction}")
        if self.kl_threshold <= 0:
            raise ConfigError(f"kl_threshold must be > 0, got {self.kl_threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.verify_top < 0 or self.verify_tokens < 1:
            raise ConfigError(f"verify_top must be >= 0 and verify_tokens >= 1, got {self.verify_top}, {self.verify_tokens}")
        if self.criterion not in ("auto", "bypass", "separation"):
            raise ConfigError(f"criterion must be 'auto', 'bypass' or 'separation', got {self.criterion!r}")


@dataclass(frozen=True)
class SelectionResult:
    """What :func:`find_direction` returns.

    Attributes:
        direction: the selected direction (``kind="single"``).
        candidates: all difference-in-means candidates.
        table: one row per candidate: position, layer, site, separation, bypass, induce, kl,
            verified_refusal (refusal rate of generated completions under ablation, where checked),
            eligible, passed, selected.
        refusal_tokens: the refusal-opening tokens the scores use, and the refusal rate seen.
        baseline: refusal scores without intervention (``harmful``, ``harmless``).
    """

    direction: Direction
    candidates: Candidates
    table: pd.DataFrame
    refusal_tokens: RefusalTokens
    baseline: dict[str, float]


def _separation(cands: Candidates, val_h: torch.Tensor, val_b: torch.Tensor) -> torch.Tensor:
    """Cohen's d of the projections of held-out prompts onto each candidate: (post, layer)."""
    units = cands.diffs / cands.diffs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    ph = torch.einsum("bpld,pld->bpl", val_h, units)
    pb = torch.einsum("bpld,pld->bpl", val_b, units)
    pooled = ((ph.var(0, unbiased=True) + pb.var(0, unbiased=True)) / 2).sqrt().clamp(min=1e-6)
    return (ph.mean(0) - pb.mean(0)) / pooled


def select_direction(
    model: Any,
    cands: Candidates,
    val_harmful: Sequence[str],
    val_harmless: Sequence[str],
    *,
    config: SelectionConfig = SelectionConfig(),
    refusal_tokens: "RefusalTokens | None" = None,
) -> SelectionResult:
    """Score candidates on validation prompts and pick the one with the lowest bypass score."""
    cfg = config
    L = model.n_layers
    max_layer = max(1, int(cfg.max_layer_fraction * L))
    bs = cfg.batch_size
    toks = refusal_tokens or find_refusal_tokens(model, val_harmful, val_harmless, batch_size=bs)
    if toks.refusal_rate < 0.5:
        logger.warning(
            "%s refuses only %.0f%% of %d harmful validation prompts: its difference-in-means direction is a "
            "harmfulness direction rather than a proven refusal mediator",
            model.model_id, 100 * toks.refusal_rate, toks.n_prompts,
        )
    base_h = refusal_score(last_logits(model, val_harmful, bs), toks.ids)
    base_b_logits = last_logits(model, val_harmless, bs)
    base_b = refusal_score(base_b_logits, toks.ids)

    val_h = collect_post_instruction(model, val_harmful, batch_size=bs, reduce="none")
    val_b = collect_post_instruction(model, val_harmless, batch_size=bs, reduce="none")
    sep = _separation(cands, val_h, val_b)

    norms = cands.diffs.norm(dim=-1)  # (post, layer); layer-0 template positions are exactly zero
    rows = []
    for p in range(cands.n_post):
        for layer in range(L):
            rows.append({"position": p - cands.n_post, "token": cands.post_tokens[p], "layer": layer,
                         "site": f"blocks.{layer}.hook_resid_pre", "separation": float(sep[p, layer]),
                         "eligible": layer < max_layer and float(norms[p, layer]) > 0})
    table = pd.DataFrame(rows)
    table["bypass"] = float("nan")
    table["induce"] = float("nan")
    table["kl"] = float("nan")
    table["verified_refusal"] = float("nan")
    pool = table[table.eligible].sort_values("separation", ascending=False)
    if cfg.top_k is not None:
        pool = pool.head(cfg.top_k)
    for idx, row in pool.iterrows():
        vec = cands.vector(int(row.position), int(row.layer)).to(model.device)
        with ablation(model, vec):
            abl_h = last_logits(model, val_harmful, bs)
            abl_b = last_logits(model, val_harmless, bs)
        with actadd(model, vec, layers=[int(row.layer)], coeff=cfg.actadd_coeff):
            add_b = last_logits(model, val_harmless, bs)
        table.loc[idx, "bypass"] = float(refusal_score(abl_h, toks.ids).mean())
        table.loc[idx, "induce"] = float(refusal_score(add_b, toks.ids).mean())
        table.loc[idx, "kl"] = float(kl_divergence(base_b_logits, abl_b).mean())
    scored = table.bypass.notna()
    table["passed"] = scored & (table.kl < cfg.kl_threshold) & (table.induce > cfg.induce_threshold)
    criterion = cfg.criterion
    if criterion == "auto":
        criterion = "bypass" if toks.refusal_rate >= 0.5 else "separation"
    if criterion == "separation":
        best = table[table.eligible].sort_values("separation", ascending=False).index[0]
    else:
        pick_from = table[table.passed]
        if pick_from.empty:
            logger.warning("no candidate passed the KL and induce filters; choosing the lowest bypass score among all scored")
            pick_from = table[scored]
        ranked = pick_from.sort_values("bypass")
        best = (_verified_best(model, cands, table, ranked.head(cfg.verify_top), val_harmful, cfg)
                if cfg.verify_top else ranked.index[0])
    table["selected"] = table.index == best
    row = table.loc[best]
    position, layer = int(row.position), int(row.layer)
    direction = Direction(
        vector=cands.vector(position, layer).clone(), kind="single", model_id=model.model_id,
        n_layers=L, d_model=model.d_model, layer=layer, position=position, site=str(row.site),
        metadata={
            "bypass": float(row.bypass), "induce": float(row.induce), "kl": float(row.kl),
            "verified_refusal": None if pd.isna(row.verified_refusal) else float(row.verified_refusal),
            "separation": float(row.separation), "baseline_harmful": float(base_h.mean()),
            "baseline_harmless": float(base_b.mean()), "refusal_tokens": list(toks.tokens),
            "refusal_token_ids": list(toks.ids), "refusal_token_source": toks.source,
            "refusal_rate_val": toks.refusal_rate, "criterion": criterion, "n_harmful_fit": cands.n_harmful,
            "n_harmless_fit": cands.n_harmless, "weights": "raw (no compatibility mode)",
            "selection": asdict(cfg),
        },
    )
    return SelectionResult(direction, cands, table, toks, {"harmful": float(base_h.mean()), "harmless": float(base_b.mean())})


def _verified_best(model: Any, cands: Candidates, table: pd.DataFrame, top: pd.DataFrame,
                   val_harmful: Sequence[str], cfg: SelectionConfig) -> Any:
    """Index of the candidate in ``top`` whose ablation leaves the fewest refusals in generated completions (a
    completion with no text counts as one: the ablation did not get the model to answer)."""
    from drtk.generation import GenerationConfig, generate
    from drtk.judges.keyword import no_answer

    gen = GenerationConfig(max_new_tokens=cfg.verify_tokens, batch_size=cfg.batch_size)
    for idx, row in top.iterrows():
        with ablation(model, cands.vector(int(row.position), int(row.layer)).to(model.device)):
            texts = generate(model, val_harmful, config=gen)
        table.loc[idx, "verified_refusal"] = sum(map(no_answer, texts)) / len(texts)
    return table.loc[top.index].sort_values(["verified_refusal", "bypass"]).index[0]


def find_direction(
    model: Any,
    harmful: "PromptSet | Sequence[str]",
    harmless: "PromptSet | Sequence[str]",
    val_harmful: "PromptSet | Sequence[str]",
    val_harmless: "PromptSet | Sequence[str]",
    *,
    config: SelectionConfig = SelectionConfig(),
) -> SelectionResult:
    """Candidates on the fit sets, selection on the validation sets; data hashes go into the metadata."""
    hashes = {}
    for key, ps in (("harmful_fit", harmful), ("harmless_fit", harmless), ("harmful_val", val_harmful),
                    ("harmless_val", val_harmless)):
        if isinstance(ps, PromptSet):
            hashes[key] = ps.sha256()
    to_list = lambda ps: list(ps.prompts) if isinstance(ps, PromptSet) else prompt_list(ps)  # noqa: E731
    cands = compute_candidates(model, to_list(harmful), to_list(harmless), batch_size=config.batch_size)
    result = select_direction(model, cands, to_list(val_harmful), to_list(val_harmless), config=config)
    direction = result.direction.with_metadata(data_hashes=hashes)
    return SelectionResult(direction, result.candidates, result.table, result.refusal_tokens, result.baseline)
