"""``drtk directions``: find and select the refusal direction of a model, with figures."""

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(sub: "argparse._SubParsersAction") -> None:
    from drtk.commands.common import add_model_args

    p = sub.add_parser("directions", help="find and select the refusal direction",
                       description="Difference-in-means candidates over layers x post-instruction positions, "
                                   "selected by bypass / induce / KL scores (Arditi et al. 2024).")
    add_model_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--harmful", default="harmful", help="harmful prompts: a shipped set, benchmark name or file")
    p.add_argument("--harmless", default="harmless", help="harmless prompts: a shipped set, benchmark name or file")
    p.add_argument("--n-fit", type=int, default=128, help="prompts per side for the difference of means")
    p.add_argument("--n-val", type=int, default=32, help="prompts per side for selection")
    p.add_argument("--n-test", type=int, default=64, help="held-out prompts per side for the separation check")
    p.add_argument("--top-k", type=int, default=24, help="candidates scored fully (0 = all)")
    p.add_argument("--verify-top", type=int, default=4,
                   help="re-rank this many lowest-bypass candidates by refusals in generated completions (0 = off)")
    p.add_argument("--probe", action="store_true",
                   help="also fit a logistic probe per layer on the fit split and read it on the test split "
                        "(probe.csv: the refusal / over-refusal a linear read-out of the model reaches)")
    p.add_argument("--borderline", default=None,
                   help="with --probe: borderline-benign prompts (e.g. the shipped 'borderline') as extra negatives")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from drtk.commands.common import load_model_from_args, write_json
    from drtk.data import load_prompts, split_prompts
    from drtk.directions import SelectionConfig, auroc, auroc_by_layer, find_direction, projections_by_layer
    from drtk.viz import (cosine_heatmap_layers, cosine_heatmap_positions, projection_by_layer, save_figure,
                          selection_scores)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    harmful = split_prompts(load_prompts(args.harmful), seed=args.seed)
    harmless = split_prompts(load_prompts(args.harmless), seed=args.seed)
    for name, sets in (("harmful", harmful), ("harmless", harmless)):
        for split in ("fit", "val", "test"):
            sets[split].require_nonempty(f"the {name} {split} split")
    model = load_model_from_args(args)  # after the prompts, so a bad prompt file fails at once
    cfg = SelectionConfig(top_k=args.top_k or None, batch_size=args.batch_size, verify_top=args.verify_top)
    logger.info("finding directions on %s (%d fit / %d val prompts per side)", model.model_id,
                min(args.n_fit, len(harmful["fit"])), min(args.n_val, len(harmful["val"])))
    result = find_direction(model, harmful["fit"].head(args.n_fit), harmless["fit"].head(args.n_fit),
                            harmful["val"].head(args.n_val), harmless["val"].head(args.n_val), config=cfg)
    d = result.direction

    # Held-out check: does the projection separate harmful from harmless test prompts?
    test_h, test_b = harmful["test"].head(args.n_test), harmless["test"].head(args.n_test)
    ph = projections_by_layer(model, test_h.prompts, d.vector, position=d.position, batch_size=args.batch_size)
    pb = projections_by_layer(model, test_b.prompts, d.vector, position=d.position, batch_size=args.batch_size)
    test_auroc = auroc(ph[:, d.layer], pb[:, d.layer])
    d = d.with_metadata(test_auroc=test_auroc, n_test=len(test_h))

    d.save(out / "direction.safetensors")
    cands = result.candidates
    save_file({"harmful_mean": cands.harmful_mean.contiguous(), "harmless_mean": cands.harmless_mean.contiguous()},
              str(out / "candidates.safetensors"))
    write_json(out / "candidates.json", {"model_id": model.model_id, "n_layers": model.n_layers,
                                         "d_model": model.d_model, "post_tokens": list(cands.post_tokens),
                                         "n_harmful": cands.n_harmful, "n_harmless": cands.n_harmless,
                                         "point": "resid_pre", "shape": list(cands.harmful_mean.shape)})
    result.table.to_csv(out / "selection.csv", index=False)

    figs = out / "figures"
    save_figure(cosine_heatmap_layers(cands.diffs, position=d.position), figs, "cosine_layers")
    save_figure(cosine_heatmap_positions(cands.diffs, d.vector, post_tokens=cands.post_tokens), figs, "cosine_positions")
    save_figure(selection_scores(result.table, kl_threshold=cfg.kl_threshold, induce_threshold=cfg.induce_threshold),
                figs, "selection_scores")
    save_figure(projection_by_layer({"harmful (held out)": ph, "harmless (held out)": pb},
                                    title=f"Projection onto the selected direction (layer {d.layer}, position {d.position}) "
                                          f"— held-out AUROC {test_auroc:.3f}"), figs, "projection_by_layer")
    summary = {
        "model_id": model.model_id, "layer": d.layer, "position": d.position, "site": d.site,
        "bypass": d.metadata["bypass"], "induce": d.metadata["induce"], "kl": d.metadata["kl"],
        "verified_refusal": d.metadata["verified_refusal"], "refusal_tokens": d.metadata["refusal_tokens"],
        "refusal_rate_val": d.metadata["refusal_rate_val"],
        # whether the selected candidate passed the KL and induce filters (when none did: the lowest bypass)
        "passed_filters": bool(result.table.loc[result.table.selected, "passed"].iloc[0]),
        "candidates_passed": int(result.table.passed.sum()), "candidates_scored": int(result.table.bypass.notna().sum()),
        "test_auroc": test_auroc, "test_auroc_by_layer": auroc_by_layer(ph, pb), "seconds": time.time() - t0,
    }
    if args.probe:
        summary["probe"] = _probe(args, model, harmful, harmless, d.position, out)
    write_json(out / "summary.json", summary)
    logger.info("selected %s position %d: bypass %.2f, induce %.2f, KL %.3f; held-out AUROC %.3f (%.0f s)",
                d.site, d.position, summary["bypass"], summary["induce"], summary["kl"], test_auroc, summary["seconds"])
    print(json.dumps({k: v for k, v in summary.items() if k != "test_auroc_by_layer"}, indent=2))
    return 0


def _probe(args: argparse.Namespace, model: Any, harmful: dict, harmless: dict, position: int, out: Path) -> dict:
    """Logistic probes per layer (fit split) read on the test split; ``probe.csv`` and the best layer.

    The best layer (highest worst-case AUROC) is picked on the same held-out prompts it is read on, so its
    row is an optimistic ceiling; ``probe.csv`` keeps every layer's."""
    from drtk.data import load_prompts, split_prompts
    from drtk.directions import probe_ceiling

    negatives = list(harmless["fit"].head(args.n_fit).prompts)
    tests = {"harmless": list(harmless["test"].head(args.n_test).prompts)}
    if args.borderline:
        border = split_prompts(load_prompts(args.borderline), seed=args.seed)
        border["test"].require_nonempty("the borderline test split")
        negatives += list(border["fit"].head(args.n_fit).prompts)
        tests["borderline"] = list(border["test"].head(args.n_test).prompts)
    table = probe_ceiling(model, list(harmful["fit"].head(args.n_fit).prompts), negatives,
                          list(harmful["test"].head(args.n_test).prompts), tests, position=position,
                          batch_size=args.batch_size)
    table.to_csv(out / "probe.csv", index=False)
    worst = table[[f"auroc:{name}" for name in tests]].min(axis=1)
    best = table.loc[worst.idxmax()]
    logger.info("probe: best at layer %d (held-out AUROC %.3f): flags %.0f%% of harmful, %s", best["layer"],
                worst.max(), 100 * best["flagged:positive"],
                ", ".join(f"{100 * best[f'flagged:{n}']:.0f}% of {n}" for n in tests))
    return {"position": position, **{k: (int(v) if k == "layer" else float(v)) for k, v in best.items()}}

