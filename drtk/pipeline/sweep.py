"""The paper's ablations at small scale: ablation probability p and recovery examples on or off.

For each ``p`` in ``probabilities`` and each ``recovery`` setting, DeepRefusal is trained from the same
aligned model by the demo's recipe for its ``deeprefusal`` stage (full fine-tuning, equal group weights, the
response and the template's post-instruction tokens ablated) with the paper's schedule at ``p_site = p_token = p``,
and attacked with the same prompts: so ``p = 0.5`` with recovery examples is the demo's stage, trained for the
sweep's steps. The result is a table and attack-success vs over-refusal trade-off figure (the paper's Tables 3-4).
Every run is a cached stage, so an interrupted sweep resumes; the aligned model's answers are generated once
and shared by every configuration.
"""

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from drtk.errors import ConfigError
from drtk.evaluation.report import refusing_prefills
from drtk.evaluation.stats import pooled_over_refusal
from drtk.pipeline.demo import DemoSize, _eval, _recipe, _train, _train_key
from drtk.pipeline.stages import StageRunner
from drtk.viz.labels import label_positions

logger = logging.getLogger(__name__)

SWEEP_ATTACKS = ("none", "prefill:k=20:source={source}", "direction-ablation", "fresh-ablation")
#: The attacks of the trade-off figure, one panel each (``sweep.csv`` column names).
FIGURE_ATTACKS = ("asr:prefill[k=20]", "asr:direction-ablation[strength=1.0]", "asr:fresh-ablation[strength=1.0]")


def _flags(p: float, recovery: bool) -> list[str]:
    """The flags of one configuration on top of the demo's DeepRefusal recipe."""
    return [*_recipe("deeprefusal"), "--p-site", f"{p:g}", "--p-token", f"{p:g}", *([] if recovery else ["--no-recovery"])]


def run_sweep(out_dir: "str | Path", *, aligned: str, direction: str, probabilities: Sequence[float] = (0.0, 0.3, 0.5, 0.7, 1.0),
              recovery: Sequence[bool] = (True, False), size: str = "quick", device: "str | None" = None, steps: "int | None" = None,
              limit: "int | None" = None, answers: "str | Path | None" = None, seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Train and evaluate every (p, recovery) configuration at every seed; returns the summary table, one row per
    run (also ``sweep.csv``).

    ``steps`` and ``limit`` override the size's training steps and evaluation prompts per set. ``answers``: the
    harmful text every model is prefilled with (a ``drtk eval`` completions.jsonl, e.g. the demo's
    ``baseline/completions.jsonl``, the shipped model's answers), so every configuration gets the same
    prefixes; without it each model is prefilled with its own answers under the ablation of ``direction``.
    ``seeds``: training seeds (``drtk train --seed``); seed 0's runs are the demo's, named without a suffix, and
    ``sweep.md`` pools the seeds of each configuration beside their own lines.
    """
    sz = DemoSize.named(size)
    steps = sz.train_steps if steps is None else steps
    limit = sz.eval_limit if limit is None else limit
    if steps < 1 or limit < 1:
        raise ConfigError(f"sweep steps and limit must be >= 1, got steps={steps}, limit={limit}")
    if not probabilities or any(not 0 <= p <= 1 for p in probabilities) or len(set(probabilities)) < len(probabilities):
        raise ConfigError(f"sweep probabilities must be distinct and in [0, 1], e.g. 0, 0.5, 1; got {list(probabilities)}")
    if not recovery or len(set(recovery)) < len(recovery):
        raise ConfigError(f"sweep recovery settings must be one or both of True, False; got {list(recovery)}")
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(f"sweep seeds must be distinct and >= 0, e.g. 0, 1; got {list(seeds)}")
    sz = dataclasses.replace(sz, train_steps=steps, eval_limit=limit)
    if answers is not None:
        from drtk.data import load_answers

        load_answers(Path(answers))  # a clear error now, before any training, for a file that is missing or empty
    prefill, source = (["--answers", str(answers)], "answers") if answers is not None else ([], "ablation")
    attacks = ",".join(SWEEP_ATTACKS).format(source=source)
    out = Path(out_dir)
    runner = StageRunner(out)
    dev = ["--device", device] if device else []
    rows, lines, results, refusing = [], [], [], []
    for rec in recovery:
        for p in probabilities:
            runs = []
            for seed in seeds:
                name = f"p{p:g}-{'recovery' if rec else 'norecovery'}" + (f"-seed{seed}" if seed else "")
                flags = [*_flags(p, rec), *(["--seed", str(seed)] if seed else [])]
                model = str(out / f"train-{name}" / "model")
                # keyed as the demo keys its stages (the recipe and the method's defaults), plus this run's flags
                runner.run(f"train-{name}", lambda d, flags=flags: _train(d, aligned, "deeprefusal", sz, dev, [
                    "--direction", direction, "--generations", str(out / "aligned-generations.jsonl"), *flags]),
                           config=_train_key({"flags": flags, "aligned": aligned, "direction": direction,
                                              "size": dataclasses.asdict(sz)}, "deeprefusal"))
                evaluated = runner.run(f"eval-{name}", lambda d, model=model: _eval(
                    d, model, sz, dev, attacks=attacks, extra=["--direction", direction, "--reference", aligned, *prefill]),
                                       config={"attacks": attacks, "limit": limit, "answers": prefill}, after=[f"train-{name}"])
                runs.append(json.loads(Path(evaluated["results"]).read_text()))
                refusing += [f"{name} `{label}` {refusing_prefills(a)} of {a['n']}"
                             for label, a in runs[-1]["attacks"].items() if refusing_prefills(a)]
                rows.append({**_row(p, rec, runs[-1]), "seed": seed})
                lines.append(_markdown_row(p, rec, str(seed), runs[-1:]))
            if len(runs) > 1:
                lines.append(_markdown_row(p, rec, f"{len(runs)} pooled", runs))
            results += runs
    table = pd.DataFrame(rows)
    table.to_csv(out / "sweep.csv", index=False)
    (out / "sweep.md").write_text(_markdown(lines, results[-1], refusing))
    return table


def _pool(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rates of the same attack or benign set from several runs as one: successes and prompts summed, the Wilson
    interval of the sum; coherent successes and looping answers summed where every run counted them."""
    from drtk.evaluation.stats import counted

    n = sum(int(a["n"]) for a in parts)
    pooled = counted(sum(int(a["k"]) for a in parts), n).to_dict()
    pooled["asr"] = pooled["rate"]
    if all(a.get("coherence") for a in parts):
        pooled["coherence"] = counted(sum(int(a["coherence"]["k"]) for a in parts), n).to_dict()
    if all(a.get("looping_answers") is not None for a in parts):
        pooled["looping_answers"] = sum(int(a["looping_answers"]) for a in parts)
    return pooled


def _markdown_row(p: float, recovery: bool, seed: str, runs: Sequence[dict[str, Any]]) -> list[str]:
    """One line of ``sweep.md``: the runs' rates pooled (one run: its own rates)."""
    from drtk.pipeline.report import _fmt, _interval, _over_refusal_cell

    attacks = {label: _pool([r["attacks"][label] for r in runs]) for label in runs[0]["attacks"]}
    benign = {s: _pool([r["over_refusal"][s] for r in runs]) for s in runs[0]["over_refusal"]}
    every = _pool(list(benign.values()))  # every benign set of every run
    pooled = _interval(every["rate"], every["ci_low"], every["ci_high"]) if every["n"] else "—"
    kls = [(r.get("capability") or {}).get("kl") for r in runs]
    kl = "—" if None in kls else " / ".join(f"{x:.3f}" for x in kls)
    return [f"{p:g}", "yes" if recovery else "no", seed, *(_fmt(a) for a in attacks.values()),
            *(_over_refusal_cell(r) for r in benign.values()), pooled, kl]


def _markdown(lines: list[list[str]], last: dict[str, Any], refusing: Sequence[str] = ()) -> str:
    """``sweep.md``: one line per configuration, each rate with its 95% Wilson interval (the column names
    from the last configuration's results; every configuration ran the same attacks and sets), and the runs
    whose prefills were themselves refusals (``"p0.5-recovery `prefill[k=20]` 20 of 24"``)."""
    head = ["p", "recovery examples", "seed", *last["attacks"], *(f"over-refusal, {s}" for s in last["over_refusal"]),
            "over-refusal, pooled", "KL to the aligned model"]
    n = min(a["n"] for a in last["attacks"].values())
    sets = " and ".join(f"{r['n']} {s}" for s, r in last["over_refusal"].items())
    return "\n".join([f"# DeepRefusal over ablation probability p and recovery examples (`{last['reference']}`)", "",
                      f"{n} held-out harmful prompts per attack, {sets} benign prompts; keyword judge, "
                      f"{last['generation']['max_new_tokens']} new tokens; 95% Wilson intervals. \"+N loops\": benign "
                      "answers that loop, not counted as refused. \"N pooled\": a configuration's N seeds, their prompts "
                      "counted together; its KL column gives each seed's.", "",
                      "| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
                      *("| " + " | ".join(line) + " |" for line in lines), "",
                      *([f"Prefills that are themselves refusals count as failed attacks, so these runs' prefill rates "
                         f"are floors: {'; '.join(refusing)}. `--answers` gives every run the same harmful text (the "
                         "demo's `baseline/completions.jsonl`: the shipped model's answers).", ""] if refusing else [])])


def _row(p: float, recovery: bool, res: dict[str, Any]) -> dict[str, Any]:
    """One configuration's line of the table: each attack's ASR, each benign set's over-refusal, the two sets
    pooled, and the KL to the aligned model; with the prompt counts, for intervals."""
    row: dict[str, Any] = {"p": p, "recovery": recovery}
    for label, a in res["attacks"].items():
        row[f"asr:{label}"] = a["asr"]
    row["n_harmful"] = min((a["n"] for a in res["attacks"].values()), default=0)
    for s, r in res["over_refusal"].items():
        row[f"over_refusal:{s}"] = r["rate"]
        row[f"looping:{s}"] = r.get("looping_answers")
    pooled = pooled_over_refusal(res)
    row["over_refusal:pooled"] = pooled.rate if pooled else float("nan")
    row["n_benign"] = pooled.n if pooled else 0
    row["kl"] = (res.get("capability") or {}).get("kl")
    return row


def tradeoff_figure(table: pd.DataFrame, *, attacks: Sequence[str] = FIGURE_ATTACKS,
                    over: str = "over_refusal:pooled") -> go.Figure:
    """Attack success vs over-refusal, one panel per attack (those of ``attacks`` the table has), one point per
    (p, recovery) configuration, connected in order of p; a configuration run at several seeds is their mean, with
    bars from the lowest to the highest seed. Configurations that land on the same point share one label
    (``p=0.5, 1``), so none hides another."""
    attacks = [a for a in attacks if a in table.columns]
    if not attacks or over not in table.columns:
        raise ConfigError(f"the sweep table has none of the attacks {list(attacks)} or no {over!r} column")
    runs = table.groupby(["recovery", "p"])[[*attacks, over]]
    seeds = int(runs.size().max())
    mean, low, high = (agg.reset_index() for agg in (runs.mean(), runs.min(), runs.max()))
    label = lambda col: col.replace("asr:", "").replace("over_refusal:", "over-refusal, ")  # noqa: E731
    spacing, width, height, margin = 0.05, 380 * len(attacks) + 120, 580, dict(t=110, b=130, l=80, r=40)
    fig = make_subplots(rows=1, cols=len(attacks), shared_yaxes=True, horizontal_spacing=spacing,
                        subplot_titles=[label(a) for a in attacks])
    colors = {True: "#d62728", False: "#1f77b4"}
    x_range, y_range = (-0.03, min(1.05, float(high[over].max()) + 0.12)), (-0.05, 1.05)
    panel_px = ((width - margin["l"] - margin["r"]) * (1 - spacing * (len(attacks) - 1)) / len(attacks),
                height - margin["t"] - margin["b"])
    lines = [(bool(rec), grp.sort_values("p")) for rec, grp in mean.groupby("recovery")]

    def bars(grp: pd.DataFrame, col: str) -> "dict[str, Any] | None":
        if seeds < 2:
            return None
        return dict(type="data", symmetric=False, array=high.loc[grp.index, col] - grp[col],
                    arrayminus=grp[col] - low.loc[grp.index, col], thickness=1, width=3)

    for col, attack in enumerate(attacks, start=1):
        texts = []
        for _, grp in lines:
            spots: dict[tuple[float, float], list[str]] = {}
            for x, y, p in zip(grp[over], grp[attack], grp["p"]):
                spots.setdefault((x, y), []).append(f"{p:g}")
            # each point labelled once, at its first configuration
            texts.append([f"p={', '.join(spots.pop((x, y)))}" if (x, y) in spots else ""
                          for x, y in zip(grp[over], grp[attack])])
        # one placement over both lines of the panel, so that no label covers another
        starts = np.cumsum([0, *(len(g) for _, g in lines)])
        spread = [] if seeds < 2 else [  # the seeds' bars
            seg for _, g in lines for i in g.index for seg in (
                ((low.at[i, over], g.at[i, attack]), (high.at[i, over], g.at[i, attack])),
                ((g.at[i, over], low.at[i, attack]), (g.at[i, over], high.at[i, attack])))]
        where = iter(label_positions([x for _, g in lines for x in g[over]], [y for _, g in lines for y in g[attack]],
                                     [t for ts in texts for t in ts], x_range=x_range, y_range=y_range, size_px=panel_px,
                                     lines=[range(a, b) for a, b in zip(starts, starts[1:])], segments=spread))
        for (rec, grp), text in zip(lines, texts):
            fig.add_trace(go.Scatter(x=grp[over], y=grp[attack], mode="markers+lines+text", text=text,
                                     error_x=bars(grp, over), error_y=bars(grp, attack),
                                     textposition=[next(where) for _ in text], textfont=dict(size=10),
                                     marker=dict(color=colors[rec]), line=dict(color=colors[rec]),
                                     legendgroup=str(rec), showlegend=col == 1,
                                     name="with recovery examples" if rec else "without recovery examples"),
                          row=1, col=col)
        fig.update_xaxes(title_text=label(over), range=x_range, tickformat=".0%", row=1, col=col)
    fig.update_yaxes(title_text="attack success rate", range=y_range, tickformat=".0%", row=1, col=1)
    fig.update_layout(title="Ablation probability p and recovery examples: attack success against over-refusal<br><sup>"
                            "DeepRefusal from one aligned model, one point per (p, recovery) configuration, connected in "
                            "order of p" + (f"; the mean of {seeds} seeds, bars from the lowest to the highest" if seeds > 1 else "")
                            + "</sup>", width=width, height=height, margin=margin,
                      legend=dict(orientation="h", x=0, y=-0.22))
    return fig
