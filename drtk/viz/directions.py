"""Figures of refusal-direction geometry: cosine heatmaps, selection scores, projections by layer."""

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

_DIVERGING = "RdBu_r"


_BLANK = "blank: no direction there (a zero difference of means, as at layer 0, which reads the same template token)"


def _cos(a: Tensor, b: Tensor) -> np.ndarray:
    """Cosines of the rows of ``a`` with the rows of ``b``; NaN (drawn blank) where a row is a zero vector."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    c = (a / na.clamp(min=1e-12)) @ (b / nb.clamp(min=1e-12)).T
    dead_a = (na <= 1e-6 * na.max().clamp(min=1e-12)).squeeze(-1)
    dead_b = (nb <= 1e-6 * nb.max().clamp(min=1e-12)).squeeze(-1)
    c[dead_a, :] = float("nan")
    c[:, dead_b] = float("nan")
    return c.numpy()


def cosine_heatmap_layers(diffs: Tensor, *, position: int = -1, title: str = "") -> go.Figure:
    """Layer x layer cosine similarity of the candidates at one post-instruction position.

    Args:
        diffs: candidates ``(post, layer, d_model)`` (``Candidates.diffs``).
        position: negative offset of the position shown.
    """
    c = _cos(diffs[position].float(), diffs[position].float())
    fig = go.Figure(go.Heatmap(z=c, zmin=-1, zmax=1, colorscale=_DIVERGING, colorbar_title="cos"))
    sub = f"<br><sup>{_BLANK}</sup>" if np.isnan(c).any() else ""
    fig.update_layout(title=(title or f"Cosine similarity of candidate directions across layers (position {position})") + sub,
                      xaxis_title="layer", yaxis_title="layer", yaxis_autorange="reversed", width=640, height=580)
    return fig


def cosine_heatmap_positions(
    diffs: Tensor, reference: Tensor, *, post_tokens: "tuple[str, ...] | None" = None, title: str = ""
) -> go.Figure:
    """Position x layer map of each candidate's cosine with ``reference`` (e.g. the selected direction)."""
    post, n_layers, _ = diffs.shape
    c = _cos(diffs.reshape(post * n_layers, -1).float(), reference[None].float()).reshape(post, n_layers)
    labels = [f"{i - post} {t!r}" for i, t in enumerate(post_tokens)] if post_tokens else [str(i - post) for i in range(post)]
    fig = go.Figure(go.Heatmap(z=c, x=list(range(n_layers)), y=labels, zmin=-1, zmax=1, colorscale=_DIVERGING,
                               colorbar_title="cos"))
    fig.update_layout(title=title or "Cosine of every candidate with the selected direction",
                      xaxis_title="layer", yaxis_title="post-instruction position", width=760, height=380)
    return fig


def cosine_heatmap_compare(before: Tensor, after: Tensor, *, position: int = -1, title: str = "") -> go.Figure:
    """Per-layer cosine between two sets of candidates (e.g. before and after training) at one position."""
    a, b = before[position].float(), after[position].float()
    c = _cos(a, b)
    fig = go.Figure(go.Heatmap(z=c, zmin=-1, zmax=1, colorscale=_DIVERGING, colorbar_title="cos"))
    same = np.diagonal(c)  # each layer's candidate before against the same layer's after
    sub = ""
    if np.isfinite(same).any():
        low = int(np.nanargmin(same))
        sub = (f"<br><sup>same layer before and after: cos {np.nanmin(same):.3f} (layer {low}) to {np.nanmax(same):.3f}"
               + ("; " + _BLANK.split(" (")[0] if np.isnan(c).any() else "") + "</sup>")
    fig.update_layout(title=(title or "Candidates before (rows) vs after (columns)") + sub, xaxis_title="layer (after)",
                      yaxis_title="layer (before)", yaxis_autorange="reversed", width=640, height=580)
    return fig


def selection_scores(table: pd.DataFrame, *, title: str = "", kl_threshold: "float | None" = None,
                     induce_threshold: "float | None" = None) -> go.Figure:
    """Bypass, induce and KL scores per layer, one line per post-instruction position; the chosen one starred.

    With ``kl_threshold`` / ``induce_threshold`` (the selection's filters) each is drawn as a dotted line; with the
    table's ``passed`` column (the selection's verdict) the subtitle says how many candidates were scored and how
    many passed both filters."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("bypass (lower = ablation removes refusal)",
                                                        "induce (higher = addition causes refusal)", "KL on harmless"))
    scored = table[table.bypass.notna()]
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for i, (pos, grp) in enumerate(scored.groupby("position")):  # a position keeps its colour in all three panels
        grp = grp.sort_values("layer")
        name = f"pos {pos} {grp.token.iloc[0]!r}" if "token" in grp else f"pos {pos}"
        for col, key in enumerate(("bypass", "induce", "kl"), start=1):
            fig.add_trace(go.Scatter(x=grp.layer, y=grp[key], mode="markers+lines", name=name, legendgroup=name,
                                     line=dict(color=palette[i % len(palette)]), showlegend=col == 1), row=1, col=col)
    chosen = table[table.get("selected", False) == True]  # noqa: E712
    if not chosen.empty:
        for col, key in enumerate(("bypass", "induce", "kl"), start=1):
            fig.add_trace(go.Scatter(x=chosen.layer, y=chosen[key], mode="markers", name="selected",
                                     marker=dict(symbol="star", size=16, color="black"), showlegend=col == 1),
                          row=1, col=col)
    for col, value, text in ((2, induce_threshold, "filter: induce >"), (3, kl_threshold, "filter: KL <")):
        if value is not None:
            fig.add_hline(y=value, line=dict(color="gray", dash="dot"), row=1, col=col,
                          annotation_text=f"{text} {value:g}", annotation_position="top left")
    sub = ""
    if "passed" in table:
        passed = int(table.passed.astype(bool).sum())
        sub = (f"<br><sup>{len(scored)} of {len(table)} candidates scored; {passed} passed both filters"
               + ("" if passed else ", so the lowest bypass among the scored ones was selected") + "</sup>")
    fig.update_xaxes(title_text="layer")
    fig.update_layout(title=(title or "Direction selection scores (validation prompts)") + sub, width=1200, height=440)
    return fig


def projection_by_layer(groups: Mapping[str, Tensor], *, title: str = "") -> go.Figure:
    """Mean (band: ±1 std) projection onto the refusal direction per layer, one line per group.

    Args:
        groups: label -> projections ``(batch, layer)``, e.g. {"harmful": ..., "harmless": ...} or
            {"aligned, harmful": ..., "aligned + ablation, harmful": ...}.
    """
    fig = go.Figure()
    palette = ["#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for i, (label, proj) in enumerate(groups.items()):
        p = proj.detach().float().cpu()
        mean, std = p.mean(0).numpy(), p.std(0).numpy() if p.shape[0] > 1 else torch.zeros(p.shape[1]).numpy()
        x = np.arange(len(mean))
        color = palette[i % len(palette)]
        dash = "dash" if "ablat" in label or "attack" in label else "solid"
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                 fill="toself", fillcolor=color, opacity=0.15, line=dict(width=0), mode="lines", hoverinfo="skip",
                                 showlegend=False, legendgroup=label))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=f"{label} (n={p.shape[0]})", legendgroup=label,
                                 line=dict(color=color, dash=dash)))
    fig.update_layout(title=title or "Projection onto the refusal direction by layer", xaxis_title="layer",
                      yaxis_title="projection (residual stream entering the block)", width=900, height=480)
    return fig
