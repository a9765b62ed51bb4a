"""``drtk compare``: several evaluations side by side (e.g. defence options, or seeds of one configuration).

Writes into ``--out``: ``comparison.csv`` (one row per run), ``spread.csv`` (mean, min and max over the runs of
each configuration with repeats), ``comparison.md`` and figures (``asr_vs_over_refusal``: one point per run and
attack; ``asr_bars``). When the runs' folders hold their completions on the same benign prompts,
``over_refusal_by_prompt.csv`` says which runs refused each benign prompt; with ``--direction`` (a direction
of the starting model) it gains each prompt's projection on that direction, measured on ``--model`` (default:
the model the direction was found on), and the figure ``over_refusal_vs_projection``; and ``comparison.csv``
gains ``benign_shift``: how far each run's model moved those benign prompts along the direction (mean
projection on the run's model minus on the starting model; the run's model is the path its results name,
as given or beside the results folder), with the figure ``over_refusal_vs_shift``.

For every shown attack whose completions all runs hold on the same harmful prompts, ``successes.csv`` splits
each run's successes into incoherent text, turns that ended at once (a few words) and the rest, and
``successes_by_prompt.csv`` says which runs each prompt broke, and how.

Example:
    drtk compare deeprefusal=runs/dr/eval adaptive#0=runs/ad0/eval adaptive#1=runs/ad1/eval --out runs/compare
    drtk compare runs/*-eval --direction runs/demo/direction --out runs/compare   # + which prompts, and why

A label ``name#tag`` marks a repeat of the configuration ``name`` (seeds); a run given without a label is
named after its folder.
"""

import argparse
import logging
from pathlib import Path
from typing import Any

from drtk.commands.common import add_model_args, load_model_from_args
from drtk.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("compare", help="evaluations side by side: a table, the spread over seeds, figures",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="[LABEL=]RESULTS",
                   help="a results.json file or a `drtk eval --out` folder, optionally labelled")
    p.add_argument("--attacks", default=None, help="comma-separated attack labels to show (default: all)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--direction", type=Path, default=None,
                   help="the starting model's refusal direction: over-refused prompts against their projection on it")
    add_model_args(p)
    p.set_defaults(func=run, model=None)


def _labelled(spec: str) -> tuple[str, str]:
    from drtk.evaluation.compare import evaluation_folder

    label, sep, path = spec.partition("=")
    if not sep:
        return evaluation_folder(spec).name, spec
    if not label or not path:
        raise ConfigError(f"expected LABEL=PATH or PATH, got {spec!r}")
    return label, path


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from drtk.evaluation.compare import (comparison_markdown, comparison_table, load_results, over_refusal_by_prompt,
                                         spread_table, successes_by_kind)
    from drtk.evaluation.report import prefill_notes
    from drtk.viz import save_figure
    from drtk.viz.story import (TRADEOFF_ATTACKS, asr_before_after, asr_vs_over_refusal, over_refusal_vs_shift,
                                tradeoff_panels)

    results: dict[str, Any] = {}
    paths: dict[str, str] = {}
    for label, path in map(_labelled, args.runs):
        if label in results:
            raise ConfigError(f"run label {label!r} given twice; label runs as NAME=PATH (repeats as NAME#1=..., NAME#2=...)")
        results[label], paths[label] = load_results(path), path
    attacks = tuple(a.strip() for a in args.attacks.split(",")) if args.attacks else None
    if attacks:
        unknown = [a for a in attacks if not any(a in res["attacks"] for res in results.values())]
        if unknown:
            known = sorted({a for res in results.values() for a in res["attacks"]})
            raise ConfigError(f"no run has attack(s) {unknown}; available: {known}")
    listed = attacks or tuple(dict.fromkeys(a for res in results.values() for a in res["attacks"]))
    table = comparison_table(results, attacks=listed)
    spread = spread_table(table)
    args.out.mkdir(parents=True, exist_ok=True)
    if not spread.empty:
        spread.to_csv(args.out / "spread.csv")
    judge = next(iter(results.values()))["judge"]["name"]
    shown = {k: {**v, "attacks": {a: x for a, x in v["attacks"].items() if a in listed}} for k, v in results.items()}
    notes = [f"{label}: {note}" for label, res in shown.items() for note in prefill_notes(res["attacks"])]
    (args.out / "comparison.md").write_text(comparison_markdown(table, spread, judge=judge, notes=notes))
    # the attacks that decide a defence (fresh, per-layer, transferred direction, prefill), where given
    decisive = tuple(a for a in TRADEOFF_ATTACKS if a in listed) or listed[:4]
    figures = args.out / "figures"
    try:
        by_prompt = over_refusal_by_prompt(paths)
    except DataError as err:
        if args.direction is not None:
            raise
        logger.info("no per-prompt over-refusal table: %s", err)
    else:
        if args.direction is not None:
            table["benign_shift"] = _add_projections(args, by_prompt, figures, results, paths)
            save_figure(over_refusal_vs_shift(table), figures, "over_refusal_vs_shift")
        by_prompt.to_csv(args.out / "over_refusal_by_prompt.csv", index=False)
    table.to_csv(args.out / "comparison.csv", index=False)
    kind_counts, kind_prompts = [], []
    for attack in listed:
        try:
            c, p = successes_by_kind(paths, attack)
        except DataError as err:
            logger.info("no breakdown of %s's successes: %s", attack, err)
            continue
        kind_counts.append(c)
        kind_prompts.append(p.assign(attack=attack))
    if kind_counts:
        pd.concat(kind_counts).to_csv(args.out / "successes.csv", index=False)
        pd.concat(kind_prompts).to_csv(args.out / "successes_by_prompt.csv", index=False)
    save_figure(tradeoff_panels(table, decisive), figures, "tradeoff")
    save_figure(asr_vs_over_refusal(shown, attacks=decisive), figures, "asr_vs_over_refusal")
    save_figure(asr_before_after(shown, title="Attack success per run (95% Wilson intervals)"), figures, "asr_bars")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    logger.info("wrote %s", args.out)
    return 0


def _run_model(label: str, spec: str, doc: dict[str, Any]) -> "Path | None":
    """The folder of the model a run's results name: as given, else beside the evaluation folder."""
    from drtk.evaluation.compare import evaluation_folder

    folder = evaluation_folder(spec)
    if not doc.get("model"):
        logger.warning("run %s: its results name no model; no benign_shift for it", label)
        return None
    named = Path(str(doc["model"]))
    for candidate in (named, folder.parent / named, folder.parent / named.name):
        if candidate.is_dir():
            return candidate
    logger.warning("run %s: its model %r is not a folder here (nor beside %s); no benign_shift for it", label,
                   str(named), folder)
    return None


def _add_projections(args: argparse.Namespace, by_prompt: Any, figures: Path, results: dict[str, Any],
                     paths: dict[str, str]) -> list[float]:
    """Each benign prompt's projection on the direction (its layer and position) on the starting model, the
    harmful prompts of the first run for the band of the figure; returns each run's benign shift."""
    from drtk.directions import Direction
    from drtk.directions.candidates import projections_by_layer
    from drtk.evaluation.compare import load_completions
    from drtk.viz import save_figure
    from drtk.viz.story import over_refusal_vs_projection

    direction = Direction.load(args.direction)
    if direction.kind != "single" or direction.layer is None:
        raise ConfigError(f"--direction needs a single direction with its layer (got a {direction.kind} direction)")
    args.model = args.model or direction.model_id
    model = load_model_from_args(args)
    vector = direction.for_model(model)
    position = direction.position if direction.position is not None else -1

    def project(on: Any, prompts: list[str]) -> Any:
        direction.check_model(on)  # a run's model of another width or depth is named, not an index error
        if not -on.chat.n_post <= position < 0:
            raise ConfigError(f"--direction was read at post-instruction position {position}, but {on.model_id!r} has "
                              f"{on.chat.n_post} post-instruction tokens; use a direction of this model family")
        return projections_by_layer(on, prompts, vector, position=position)[:, direction.layer]

    benign = list(by_prompt["prompt"])
    by_prompt["projection"] = project(model, benign).tolist()
    harmful = [r["prompt"] for r in load_completions(next(iter(paths.values())))
               if r["attack"] == "none" and r["set"] == "harmful"]
    save_figure(over_refusal_vs_projection(by_prompt, harmful=project(model, harmful) if harmful else None,
                                           direction_label=f"layer {direction.layer}"), figures, "over_refusal_vs_projection")
    start = float(by_prompt["projection"].mean())
    shifts = []
    for label, spec in paths.items():
        path = _run_model(label, spec, results[label])
        if path is None:
            shifts.append(float("nan"))
            continue
        run_model = load_model_from_args(argparse.Namespace(**{**vars(args), "model": str(path)}))
        shifts.append(float(project(run_model, benign).mean()) - start)
    return shifts
