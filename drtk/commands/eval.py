"""``drtk eval``: attack a model, judge the completions, measure over-refusal and capability; write a report.

Writes into ``--out``: ``results.json`` (schema: docs/results-schema.md), ``completions.jsonl``,
``report.md``, ``table.csv`` and figures (``asr_bars``, ``asr_vs_kl``, ``asr_vs_prefill``).

Example:
    drtk eval --model runs/refusal-smollm --reference smollm2-135m-instruct --direction runs/dir \\
        --attacks none,prefill:k=4/16/64,direction-ablation,fresh-ablation,gcg:steps=20 --limit 64 --out runs/eval
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from drtk.commands.common import add_model_args, load_model_from_args, write_json

logger = logging.getLogger(__name__)

# Without --direction the ablation runs with a direction re-extracted on the model (fresh-ablation).
DEFAULT_ATTACKS = "none,prefill,direction-ablation"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="attack a model and report ASR, over-refusal and capability",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--reference", default=None, help="the model before training (KL, perplexity, paired comparisons, "
                   "lora-interpolation base)")
    p.add_argument("--direction", default=None, type=Path, help="a direction saved by `drtk directions` (file or folder)")
    p.add_argument("--attacks", default=None,
                   help="comma-separated specs name[:key=value[/value2...]], e.g. 'none,prefill:k=4/16,actadd:coeff=1/2' "
                   f"(default: {DEFAULT_ATTACKS!r}, with fresh-ablation for direction-ablation when no --direction is "
                   "given). Available: none, prefill, direction-ablation, fresh-ablation, per-layer-ablation, actadd, orthogonalize, "
                   "prefill+ablation, gcg, embedding, lora-interpolation, templates")
    p.add_argument("--no-sweep", action="store_true", help="run each attack at its default strength only")
    p.add_argument("--harmful", default=None, help="file or set name (default: the held-out 'test' split of drtk's harmful set)")
    p.add_argument("--harmless", default=None, help="file or set name (default: 'test' split of drtk's harmless set)")
    p.add_argument("--borderline", default=None, help="file or set name (default: 'test' split of drtk's borderline set)")
    p.add_argument("--known-data", action="append", default=[], help="training/fitting prompt file(s): overlapping "
                   "evaluation prompts are dropped (the model folder's run metadata is read automatically)")
    p.add_argument("--answers", default=None, type=Path,
                   help="harmful answers per prompt for `prefill:source=answers` (a file with prompt and answer columns, "
                        "or a `drtk eval` completions.jsonl: its complied no-attack answers)")
    p.add_argument("--fit-prompts", type=int, default=64, help="prompts per side that adaptive attacks (fresh, "
                   "per-layer, orthogonalize with a fresh direction) fit their directions on")
    p.add_argument("--val-prompts", type=int, default=32, help="prompts per side that a fresh direction is selected on")
    p.add_argument("--fresh-top-k", type=int, default=8, help="candidates a fresh direction's selection scores")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most N prompts per set")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--judge", default="keyword", help="keyword (default), llamaguard, harmbench, strongreject")
    p.add_argument("--nll-threshold", type=float, default=None,
                   help="coherent ASR: a complying completion counts only when the unattacked model scores it at most "
                        "this many nats per token (default: NLL_THRESHOLD of drtk.evaluation.harness; 0 = off)")
    p.add_argument("--generations", default=None, type=Path,
                   help="reuse unattacked greedy completions kept in this JSON-lines file and add new ones "
                        "(evaluations that share a model, e.g. as each other's reference, generate them once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="go on from the attacks an interrupted run into --out finished (kept in --out/attacks-partial.jsonl; "
                        "an attack is reused only when it and the attacks before it ran with this command's settings)")
    p.set_defaults(func=run)


def _prompts(spec: "str | None", default: str, limit: "int | None") -> Any:
    from drtk.data import load_prompts, standard_splits
    from drtk.data.loading import SHIPPED_PROMPT_SETS
    from drtk.errors import DataError

    if spec is None or spec in SHIPPED_PROMPT_SETS:  # a shipped set is evaluated on its held-out test split
        ps = standard_splits(spec or default)["test"]
    else:
        ps = load_prompts(spec)
    if not len(ps):
        raise DataError(f"prompt set {spec or default!r} is empty")
    return ps.head(limit) if limit is not None else ps


def run(args: argparse.Namespace) -> int:
    import torch

    from drtk.attacks import AttackContext, parse_attack_spec
    from drtk.data import load_answers, load_prompts
    from drtk.directions import Direction
    from drtk.errors import ConfigError
    from drtk.evaluation import AttackLog, evaluate, report_markdown, sets_from_folder, validate_results
    from drtk.evaluation.progress import PARTIAL_LOG, has_finished_attacks
    from drtk.evaluation.harness import NLL_THRESHOLD
    from drtk.generation import GenerationConfig
    from drtk.judges import get_judge
    from drtk.models import load_model
    from drtk.viz import save_figure
    from drtk.viz.evaluation import asr_bars, asr_vs_kl, asr_vs_prefill

    if args.attacks is None:
        args.attacks = DEFAULT_ATTACKS if args.direction else DEFAULT_ATTACKS.replace("direction-ablation", "fresh-ablation")
        logger.info("attacks: %s (--attacks chooses others)", args.attacks)
    attacks = [a for spec in args.attacks.split(",") if spec.strip() for a in parse_attack_spec(spec, sweep=not args.no_sweep)]
    if not attacks:
        raise ConfigError(f"--attacks {args.attacks!r} names no attack; e.g. --attacks none,prefill,fresh-ablation")
    log_path = args.out / PARTIAL_LOG
    if has_finished_attacks(args.out) and not args.resume:
        raise ConfigError(f"{args.out} holds {len(AttackLog(log_path))} finished attack(s) of an interrupted evaluation; "
                          f"pass --resume to go on from them, or delete {log_path} to start over")
    judge = get_judge(args.judge)
    if args.nll_threshold is not None and args.nll_threshold < 0:
        raise ConfigError(f"--nll-threshold is in nats per token and must be >= 0 (0 = off), got {args.nll_threshold}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1 (leave it out for every prompt), got {args.limit}")
    harmful = _prompts(args.harmful, "harmful", args.limit)
    harmless = _prompts(args.harmless, "harmless", args.limit)
    borderline = _prompts(args.borderline, "borderline", args.limit)
    # files are read before any model is loaded, so a wrong path fails at once
    direction = Direction.load(args.direction) if args.direction is not None else None
    answers = load_answers(args.answers) if args.answers is not None else None
    model = load_model_from_args(args)
    reference = load_model(args.reference, device=model.device, dtype=model.dtype) if args.reference else None
    known = [load_prompts(f) for f in args.known_data] + sets_from_folder(model.model_id)
    if direction is not None:
        direction.check_model(model)
        from drtk.evaluation import sets_from_metadata

        known += sets_from_metadata(direction.metadata)
    from drtk.directions import SelectionConfig

    ctx = AttackContext(direction=direction, reference=reference, answers=answers, n_fit=args.fit_prompts,
                        n_val=args.val_prompts, selection=SelectionConfig(top_k=args.fresh_top_k),
                        generation=GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size),
                        generator=torch.Generator(device=model.device).manual_seed(args.seed))
    from drtk.training import GenerationCache

    cache = GenerationCache(args.generations) if args.generations is not None else None
    log = AttackLog(log_path)
    ev = evaluate(model, attacks, harmful, harmless=harmless, borderline=borderline, reference=reference, context=ctx,
                  judge=judge, known_data=known, completions=cache, log=log,
                  nll_threshold=NLL_THRESHOLD if args.nll_threshold is None else args.nll_threshold or None)
    if args.resume:
        if log.reused:
            logger.info("resumed: %d of %d attacks read from %s", log.reused, len(attacks), log_path)
        else:
            logger.warning("--resume: no finished attack in %s matched this evaluation's model, prompts and settings; "
                           "every attack ran", log_path)
    if cache is not None:
        cache.save()
        logger.info("completions: %d reused from %s", cache.hits, cache.path)
    results = ev.to_results()
    validate_results(results)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    with (out / "completions.jsonl").open("w") as f:
        for rec in ev.completion_records():
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    ev.table().to_csv(out / "table.csv", index=False)
    figures = []
    for name, fn in (("asr_bars", asr_bars), ("asr_vs_kl", asr_vs_kl), ("asr_vs_prefill", asr_vs_prefill)):
        fig = fn(results)
        if fig.data:
            save_figure(fig, out, name)
            figures.append(f"{name}.html")
    (out / "report.md").write_text(report_markdown(results, figures))
    log.remove()  # the results hold every attack now
    logger.info("\n%s", ev.table().to_string(index=False))
    logger.info("wrote %s", out)
    return 0
