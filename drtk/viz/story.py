"""Figures that compare models: before vs after rebuilding refusal."""

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from drtk.evaluation.compare import config_name
from drtk.evaluation.stats import pooled_over_refusal
from drtk.viz.evaluation import prefill_points, with_floor_note

_COLORS = {"baseline": "#7f7f7f", "aligned": "#d62728", "deeprefusal": "#1f77b4", "adaptive": "#2ca02c"}
# every other configuration, by its place in the figure: none of the above, so up to 16 configurations (the
# fixed ones included) are told apart
_PALETTE = ["#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#000000", "#aec7e8", "#ffbb78",
            "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5"]


def _color(name: str, i: int) -> str:
    """The demo's models keep their colours; repeats (``adaptive#seed1``) take their configuration's."""
    return _COLORS.get(config_name(name), _PALETTE[i % len(_PALETTE)])


def asr_before_after(results: Mapping[str, Mapping[str, Any]], *, title: str = "") -> go.Figure:
    """Grouped bars: ASR (95% Wilson interval) per attack setting, one bar colour per model.

    Where a result carries the coherence check (``attacks[...]["coherence"]``), the solid part of a bar is
    the coherent ASR and the pale rest the successes that are loops or word salad, so a broken model's
    gibberish is not read as a working attack.

    Args:
        results: model label -> a ``results.json`` document.
    """
    labels: list[str] = []
    for res in results.values():
        labels += [a for a in res["attacks"] if a not in labels]
    fig = go.Figure()
    any_coherence = False
    for i, (name, res) in enumerate(results.items()):
        att = res["attacks"]
        y = [att[a]["asr"] if a in att else 0 for a in labels]
        lo = [att[a]["asr"] - att[a]["ci_low"] if a in att else 0 for a in labels]
        hi = [att[a]["ci_high"] - att[a]["asr"] if a in att else 0 for a in labels]
        coherent = [att[a]["coherence"]["rate"] if "coherence" in att.get(a, {}) else None for a in labels]
        has = any(c is not None for c in coherent)
        any_coherence |= has
        # an attack the model was not given (e.g. interpolation towards a base it does not have) says so
        fig.add_trace(go.Bar(x=labels, y=y, name=name, marker_color=_color(name, i), opacity=0.4 if has else 1.0,
                             offsetgroup=str(i), legendgroup=name, showlegend=not has,
                             text=["" if a in att else "n/a" for a in labels], textposition="outside",
                             error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo)))
        if has:  # the legend shows the solid colour, the one the coherent successes are drawn in
            fig.add_trace(go.Bar(x=labels, y=coherent, name=name, marker_color=_color(name, i),
                                 offsetgroup=str(i), legendgroup=name,
                                 hovertemplate="%{x}: coherent %{y:.0%}<extra>" + name + "</extra>"))
    judge = next(iter(results.values()))["judge"]["name"]
    subtitle = "<br><sup>solid: coherent successes; pale: successes that are loops or word salad</sup>"
    fig.update_layout(barmode="group", yaxis=dict(title=f"attack success rate ({judge} judge)", range=[0, 1.05],
                                                  tickformat=".0%"),
                      title=(title or "Attack success before and after rebuilding refusal (95% Wilson intervals)")
                      + (subtitle if any_coherence else ""),
                      width=1200, height=540, xaxis_tickangle=-30)
    return fig


def asr_vs_prefill_models(results: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """ASR against the number of prefilled harmful tokens, one line per model (hollow markers: floors)."""
    fig, plotted = go.Figure(), []
    for i, (name, res) in enumerate(results.items()):
        rows = sorted((a for a in res["attacks"].values() if a["attack"] == "prefill" and a.get("knob") == "k"),
                      key=lambda a: a["knob_value"])
        if not rows:
            continue
        plotted += rows
        k, asr, lo, hi = (np.array([a[key] for a in rows]) for key in ("knob_value", "asr", "ci_low", "ci_high"))
        fig.add_trace(go.Scatter(x=k, y=asr, mode="lines+markers", name=name, line=dict(color=_color(name, i)),
                                 error_y=dict(type="data", symmetric=False, array=hi - asr, arrayminus=asr - lo),
                                 **prefill_points(rows)))
    fig.update_layout(title=with_floor_note("Prefilling attack: success vs prefill length", plotted),
                      xaxis_title="prefilled harmful tokens (k)",
                      yaxis=dict(title="attack success rate", range=[0, 1.05], tickformat=".0%"), width=760, height=460)
    return fig


_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down", "pentagon",
            "hexagon", "star-triangle-up", "hourglass"]
# the demo's attacks keep one marker in every figure; others take the next free ones
_ATTACK_SYMBOLS = {"direction-ablation[strength=1.0]": "circle", "fresh-ablation[strength=1.0]": "square",
                   "per-layer-ablation[k=1]": "diamond", "prefill[k=20]": "triangle-up", "actadd[coeff=1.0]": "x",
                   "lora-interpolation[lam=0.5]": "star"}


def _symbols(labels: "list[str]") -> dict[str, str]:
    free = [s for s in _SYMBOLS if s not in _ATTACK_SYMBOLS.values()] or _SYMBOLS
    out, i = {}, 0
    for label in labels:
        if label in _ATTACK_SYMBOLS:
            out[label] = _ATTACK_SYMBOLS[label]
        else:
            out[label], i = free[i % len(free)], i + 1
    return out


def asr_vs_kl_models(results: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """Each model-editing attack as a point: its capability cost (KL) against its success (95% Wilson
    interval). Colour is the model, the marker the attack, each with its own legend, so points that fall
    together stay readable."""
    fig = go.Figure()
    attacks: list[str] = []
    for res in results.values():
        attacks += [label for label, a in res["attacks"].items() if a.get("kl") is not None and label not in attacks]
    symbol = _symbols(attacks)
    for i, (name, res) in enumerate(results.items()):
        color = _color(name, i)
        for label, a in res["attacks"].items():
            if a.get("kl") is None:
                continue
            fig.add_trace(go.Scatter(
                x=[a["kl"]], y=[a["asr"]], mode="markers", showlegend=False, name=f"{name}: {label}",
                marker=dict(size=12, color=color, symbol=symbol[label], line=dict(width=1, color="white")),
                error_y=dict(type="data", symmetric=False, array=[a["ci_high"] - a["asr"]],
                             arrayminus=[a["asr"] - a["ci_low"]], color=color, thickness=1),
                hovertemplate=f"{name}<br>{label}<br>KL %{{x:.3g}}<br>ASR %{{y:.0%}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, legend="legend",
                                 marker=dict(size=12, color=color, symbol="circle")))
    for label in attacks:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label, legend="legend2",
                                 marker=dict(size=11, color="#555555", symbol=symbol[label])))
    fig.update_layout(title="Attack success vs capability cost of the edit (95% Wilson intervals)",
                      xaxis=dict(title="KL(unattacked ‖ attacked) on benign answers", type="log", dtick=1),
                      yaxis=dict(title="attack success rate", range=[-0.05, 1.1], tickformat=".0%"),
                      legend=dict(title_text="model", x=1.02, y=1, yanchor="top"),
                      legend2=dict(title_text="attack", x=1.02, y=0.6, yanchor="top"), width=1000, height=540)
    return fig


TRADEOFF_ATTACKS = ("fresh-ablation[strength=1.0]", "per-layer-ablation[k=1]", "direction-ablation[strength=1.0]",
                    "prefill[k=20]")


def asr_vs_over_refusal(results: Mapping[str, Mapping[str, Any]], *, attacks: "tuple[str, ...]" = TRADEOFF_ATTACKS,
                        over_refusal_target: "float | None" = None, target_label: str = "target") -> go.Figure:
    """The price of robustness: one point per model and attack, its success against the model's over-refusal
    on all benign prompts (harmless and borderline pooled), both with 95% Wilson intervals. A good defence
    sits bottom left; a model that resists attacks only by refusing everything sits bottom right.

    Filled markers are the judge's ASR; where the coherence check ran and finds fewer successes, an open
    marker below it gives the coherent ASR (successes that read as text), joined to it by a thin line. A
    model's attacks share its over-refusal, so they are spread a little sideways to stay visible. Colour is
    the model and the marker the attack, each with its own legend.

    ``over_refusal_target``: a dotted vertical line at that over-refusal, labelled ``target_label``."""
    fig = go.Figure()
    symbol = _symbols(list(attacks))
    dodge = 0.012
    shown_models = []
    for i, (name, res) in enumerate(results.items()):
        over = pooled_over_refusal(dict(res))
        if over is None:
            continue
        color = _color(name, i)
        present = [label for label in attacks if label in res["attacks"]]
        for j, label in enumerate(present):
            a = res["attacks"][label]
            x = over.rate + dodge * (j - (len(present) - 1) / 2)
            coh = a.get("coherence")
            if coh is not None and coh["rate"] < a["asr"]:
                fig.add_trace(go.Scatter(x=[x, x], y=[a["asr"], coh["rate"]], mode="lines+markers", showlegend=False,
                                         line=dict(color=color, width=1),
                                         marker=dict(size=[0, 11], color="white", symbol=symbol[label],
                                                     line=dict(width=2, color=color)),
                                         hovertemplate=f"{name}<br>{label}<br>coherent %{{y:.0%}}<extra></extra>"))
            fig.add_trace(go.Scatter(
                x=[x], y=[a["asr"]], mode="markers", name=f"{name}: {label}", showlegend=False,
                marker=dict(size=12, color=color, symbol=symbol[label], line=dict(width=1, color="white")),
                error_x=dict(type="data", symmetric=False, array=[over.ci_high - over.rate], arrayminus=[over.rate - over.ci_low],
                             color=color, thickness=1),
                error_y=dict(type="data", symmetric=False, array=[a["ci_high"] - a["asr"]], arrayminus=[a["asr"] - a["ci_low"]],
                             color=color, thickness=1),
                hovertemplate=f"{name}<br>{label}<br>over-refusal {over.rate:.0%}<br>ASR %{{y:.0%}}<extra></extra>"))
        shown_models.append((name, color))
    for name, color in shown_models:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, legend="legend",
                                 marker=dict(size=12, color=color, symbol="circle")))
    for label in attacks:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label, legend="legend2",
                                 marker=dict(size=11, color="#555555", symbol=symbol[label])))
    if over_refusal_target is not None:
        fig.add_vline(x=over_refusal_target, line=dict(color="gray", dash="dot"), annotation_text=target_label,
                      annotation_position="top right")
    fig.update_layout(title="Attack success vs over-refusal, one point per model and attack<br><sup>filled: the judge's "
                            "ASR; open: the coherent ASR where lower; over-refusal: harmless and borderline prompts "
                            "together; a model's points are spread sideways</sup>",
                      xaxis=dict(title="over-refusal on benign prompts", range=[-0.05, 1.05], tickformat=".0%"),
                      yaxis=dict(title="attack success rate", range=[-0.05, 1.05], tickformat=".0%"),
                      legend=dict(title_text="model", x=1.02, y=1, yanchor="top"),
                      legend2=dict(title_text="attack", x=1.02, y=0.6, yanchor="top"), width=1000, height=580)
    return fig


def projection_panels(panels: Mapping[str, Mapping[str, Tensor]], *, title: str = "", x_title: str = "layer",
                      marks: "Mapping[float, str] | None" = None, subtitle: str = "band: ±1 standard deviation") -> go.Figure:
    """Side-by-side panels of mean ± std projections, e.g. one panel per model, lines with/without attack.

    Args:
        panels: panel title -> (line label -> projections ``(batch, x)``).
        marks: x -> label of a dotted vertical line drawn in every panel (e.g. where a prefill ends).
        subtitle: a line under the title (what the bands are, what was projected onto).
    """
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), shared_yaxes=True)
    palette = ["#d62728", "#ff9896", "#1f77b4", "#aec7e8", "#2ca02c", "#98df8a"]
    for col, (panel, lines) in enumerate(panels.items(), start=1):
        for i, (label, proj) in enumerate(lines.items()):
            p = proj.detach().float().cpu().numpy()
            mean, std = np.nanmean(p, 0), np.nanstd(p, 0)  # rows may end early (NaN past their end)
            x = np.arange(p.shape[1])
            color = palette[i % len(palette)]
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                     fill="toself", fillcolor=color, opacity=0.15, line=dict(width=0), mode="lines",
                                     hoverinfo="skip", showlegend=False), row=1, col=col)
            fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=label, legendgroup=label, showlegend=col == 1,
                                     line=dict(color=color, dash="dash" if "attack" in label or "ablat" in label else "solid")),
                          row=1, col=col)
        for x_mark, text in (marks or {}).items():
            label = dict(annotation_text=text, annotation_position="top right") if col == 1 else {}
            fig.add_vline(x=x_mark, line=dict(color="gray", dash="dot"), row=1, col=col, **label)
        fig.update_xaxes(title_text=x_title, row=1, col=col)
    fig.update_yaxes(title_text="projection onto the unit refusal direction (residual-stream units)", row=1, col=1)
    fig.update_layout(title=title + (f"<br><sup>{subtitle}</sup>" if subtitle else ""), width=420 * len(panels) + 200,
                      height=480)
    return fig


def _axis_top(values: Any) -> float:
    """The upper end of a rate axis: 8 points past the highest value, at least 0.5 and at most 1.05."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(min(1.05, max(0.5, (v.max() if v.size else 0.0) + 0.08)))


def tradeoff_panels(table: pd.DataFrame, attacks: tuple[str, ...] = TRADEOFF_ATTACKS, *,
                    targets: "Mapping[str, float] | None" = None, over_refusal_target: "float | None" = None,
                    title: str = "") -> go.Figure:
    """One panel per attack: each configuration as one labelled point, its attack success against its pooled
    over-refusal. Repeated runs of a configuration (``name#tag``) give the mean with a min–max bar.

    Args:
        table: :func:`~drtk.evaluation.compare.comparison_table` output.
        attacks: its attack columns to draw (those missing from the table are skipped).
        targets: an attack's highest acceptable success rate, drawn as a dashed line in its panel.
        over_refusal_target: the highest acceptable over-refusal, a dashed line in every panel: a configuration
            that meets both sits in the panel's lower left corner.
        title: the figure's title (default: what it plots).
    """
    attacks = tuple(a for a in attacks if a in table.columns)
    fig = make_subplots(rows=1, cols=max(len(attacks), 1), subplot_titles=list(attacks), shared_yaxes=True)
    over = "over-refusal pooled"
    groups = table.groupby("config", sort=False)
    mode = "markers+text" if groups.ngroups <= 4 else "markers"  # more labels overlap: the legend names them
    # axes from 0 to a little past the highest point (at least 50%, at most 100%): defences cluster low, where a
    # fixed 0-100% scale would stack their points on one another
    lines_y = [targets[a] for a in attacks if targets and a in targets]
    lines_x = [] if over_refusal_target is None else [over_refusal_target]
    x_top = _axis_top([*table[over], *lines_x])  # the target lines stay in view
    y_top = _axis_top([*table[list(attacks)].to_numpy().ravel(), *lines_y])
    for i, (config, rows) in enumerate(groups):
        x = rows[over]
        # a label centred on a point near either edge would be cut off by its panel
        where = x.mean() / x_top
        side = "top right" if where < 0.3 else "top left" if where > 0.7 else "top center"
        for col, attack in enumerate(attacks, start=1):
            y = rows[attack]
            fig.add_trace(go.Scatter(
                x=[x.mean()], y=[y.mean()], mode=mode, text=[f"{config} ×{len(rows)}" if len(rows) > 1 else config],
                textposition=side, cliponaxis=False, name=config, legendgroup=config, showlegend=col == 1,
                marker=dict(size=12, color=_color(config, i)),
                error_x=dict(type="data", symmetric=False, array=[x.max() - x.mean()], arrayminus=[x.mean() - x.min()]),
                error_y=dict(type="data", symmetric=False, array=[y.max() - y.mean()], arrayminus=[y.mean() - y.min()]),
            ), row=1, col=col)
            fig.update_xaxes(title_text="over-refusal (benign)", range=[-0.02 * x_top, x_top], tickformat=".0%",
                             row=1, col=col)
    for col, attack in enumerate(attacks, start=1):
        if targets and attack in targets:
            fig.add_hline(y=targets[attack], line=dict(dash="dash", color="#555", width=1), row=1, col=col)
        if over_refusal_target is not None:
            fig.add_vline(x=over_refusal_target, line=dict(dash="dash", color="#555", width=1), row=1, col=col)
    fig.update_yaxes(title_text="attack success rate", range=[-0.02 * y_top, y_top], tickformat=".0%", row=1, col=1)
    fig.update_layout(title=title or "Attack success vs over-refusal, one point per configuration (repeats: mean, min–max)",
                      width=330 * max(len(attacks), 1) + 220, height=max(480, 160 + 36 * groups.ngroups))  # the legend fits
    return fig


def over_refusal_vs_shift(table: pd.DataFrame) -> go.Figure:
    """Pooled over-refusal of each run against how far its model moved the benign prompts along the starting
    model's refusal direction (``benign_shift``), with the rank correlation over the runs in the title.

    Args:
        table: :func:`drtk.evaluation.compare.comparison_table` with a ``benign_shift`` column.
    """
    rows = table.dropna(subset=["benign_shift", "over-refusal pooled"])
    rho = rows["benign_shift"].corr(rows["over-refusal pooled"], method="spearman") if len(rows) > 2 else float("nan")
    fig = go.Figure()
    for i, (name, part) in enumerate(rows.groupby("config", sort=False)):
        fig.add_trace(go.Scatter(
            x=part["benign_shift"], y=100 * part["over-refusal pooled"], mode="markers+text", name=str(name),
            marker=dict(size=10, color=_color(str(name), i)), customdata=part["run"],
            text=[run.split("#", 1)[-1] for run in part["run"]], textposition="top center", textfont=dict(size=10),
            hovertemplate="%{customdata}<br>shift %{x:.1f}<br>over-refusal %{y:.0f}%<extra></extra>",
        ))
    fig.update_layout(
        title=f"Over-refusal vs the benign prompts' shift along the refusal direction (Spearman {rho:.2f}, {len(rows)} runs)",
        xaxis=dict(title="mean projection shift of the benign prompts (run's model minus starting model)"),
        yaxis=dict(title="over-refusal, harmless + borderline (%)"), width=900, height=520,
        showlegend=rows["config"].nunique() < len(rows))  # a legend only when labels group runs (NAME#TAG)
    return fig


def over_refusal_vs_projection(table: pd.DataFrame, *, harmful: "Tensor | None" = None, direction_label: str = "") -> go.Figure:
    """Which benign prompts the runs over-refuse, against where the starting model puts them on its refusal
    direction: one point per prompt (x its projection, y how many runs refused it, jittered apart), the band
    the harmful prompts' projections span shaded. Points far right are benign prompts the starting model
    already represents like harmful ones.

    Args:
        table: :func:`drtk.evaluation.compare.over_refusal_by_prompt` with a ``projection`` column.
        harmful: the harmful prompts' projections, for the band (optional).
        direction_label: named in the x axis title (e.g. "layer 23").
    """
    n_runs = len([c for c in table.columns if c not in ("set", "prompt", "refused_by", "projection")])
    fig = go.Figure()
    if harmful is not None and len(harmful):
        fig.add_vrect(x0=float(harmful.min()), x1=float(harmful.max()), fillcolor="rgba(214,39,40,0.12)", line_width=0,
                      annotation_text="harmful prompts", annotation_position="bottom right")
    for i, (name, rows) in enumerate(table.groupby("set", sort=True)):
        jitter = ((rows.index.to_numpy() * 0.618) % 1 - 0.5) * 0.3  # deterministic, keeps equal counts apart
        fig.add_trace(go.Scatter(
            x=rows["projection"], y=rows["refused_by"] + jitter, mode="markers", name=str(name),
            marker=dict(size=9, color=_color(str(name), i), opacity=0.8), text=rows["prompt"],
            hovertemplate="%{text}<br>projection %{x:.1f}<br>refused by %{customdata} runs<extra></extra>",
            customdata=rows["refused_by"],
        ))
    fig.update_layout(
        title=f"Over-refused benign prompts vs the starting model's refusal projection ({n_runs} runs)",
        xaxis=dict(title=f"projection on the refusal direction{', ' + direction_label if direction_label else ''} (starting model)"),
        yaxis=dict(title="runs that refused the prompt", range=[-0.6, n_runs + 0.6]), width=900, height=520)
    return fig
