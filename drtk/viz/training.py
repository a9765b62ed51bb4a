"""Figures of training: ablation schedules, training curves, direction drift. Each returns a ``go.Figure``."""

from typing import Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from drtk.schedules import AblationSchedule


def schedule_heatmap(
    schedule: AblationSchedule, *, n_layers: int, max_depth: int = 64, step: int = 0,
    direction_layer: Optional[int] = None, title: str = "",
) -> go.Figure:
    """Expected ablation probability of a region token at each (layer, token depth) at ``step`` (attacker
    steps and clean rows included, as :meth:`~drtk.schedules.AblationSchedule.probability_grid` counts them)."""
    grid = schedule.probability_grid(step, n_layers, max_depth, direction_layer)
    fig = go.Figure(go.Heatmap(z=grid.cpu().numpy(), x=list(range(max_depth)), y=list(range(n_layers)),
                               colorscale="Viridis", zmin=0, zmax=1, colorbar=dict(title="p(ablate)")))
    lead = schedule.region_lead
    region = {"all": "prompt and response tokens", "response": "response tokens"}.get(schedule.region, f"{schedule.region} tokens")
    if lead == "post":
        region += ", after the template's post-instruction tokens"
    elif lead:
        region += f", after the {lead} tokens before them"
    extras = []
    if schedule.attack_fraction:
        extras.append(f"every cell on {schedule.attack_fraction:.0%} of steps")
    if schedule.clean_fraction:
        extras.append(f"{schedule.clean_fraction:.0%} of rows never")
    sub = (f"<br><sup>p_site={schedule.p_site}, p_token={schedule.p_token}" + "".join(f"; {e}" for e in extras)
           + f"; mean {float(grid.mean()):.3f} (the realized rate per step is in the training curves)</sup>")
    fig.update_layout(title=(title or f"Ablation probability at step {step}") + sub,
                      xaxis_title=f"token depth into the ablated region ({region})", yaxis_title="layer")
    return fig


def schedule_over_steps(
    schedule: AblationSchedule, *, n_layers: int, steps: int, direction_layer: Optional[int] = None
) -> go.Figure:
    """Site probability (``p_site`` after the step and layer profiles) per layer over training steps."""
    import torch

    z = torch.stack([schedule.site_probabilities(s, n_layers, direction_layer) for s in range(steps)], dim=1)
    fig = go.Figure(go.Heatmap(z=z.cpu().numpy(), x=list(range(steps)), y=list(range(n_layers)), colorscale="Viridis",
                               zmin=0, zmax=1, colorbar=dict(title="p_site")))
    fig.update_layout(title=f"Site gate probability over steps ({schedule.step_profile}, {schedule.layer_profile})",
                      xaxis_title="step", yaxis_title="layer")
    return fig


def training_curves(history: pd.DataFrame, *, title: str = "Training", loss_reduction: Optional[str] = None) -> go.Figure:
    """Loss (total and per group), realized ablation rate, learning rate and gradient norm per step.

    ``loss_reduction`` (a run's ``TrainConfig.loss_reduction``) names the loss's unit on its axis. Panels with
    nothing to show (no ablation in a run without a schedule) are left out; a group's loss is missing on the
    steps whose batches hold no example of it."""
    rate = history.get("ablation_rate")
    panels = ["loss", "ablation_rate", "lr", "grad_norm"]
    if rate is None or not (rate.fillna(0) > 0).any():
        panels.remove("ablation_rate")
    loss = {"sum": "loss per example (sum over its response tokens)",
            "mean": "loss per example (mean over its response tokens)"}.get(loss_reduction or "", "loss")
    titles = {"loss": loss, "ablation_rate": "realized ablation rate (ablated / region cells)", "lr": "learning rate",
              "grad_norm": "gradient norm (before clipping)"}
    fig = make_subplots(rows=2, cols=2, subplot_titles=[titles[k] for k in panels])
    where = {k: (1 + i // 2, 1 + i % 2) for i, k in enumerate(panels)}
    x = history["step"] if "step" in history else history.index
    for col, name in (("loss", "total"), ("loss_benign", "benign"), ("loss_harmful", "harmful")):
        if col in history:
            fig.add_trace(go.Scatter(x=x, y=history[col], name=name, mode="lines"), row=1, col=1)
    for col in panels[1:]:
        if col in history:
            fig.add_trace(go.Scatter(x=x, y=history[col], name=col, mode="lines", showlegend=False), *where[col])
    gaps = any(col in history and history[col].isna().any() for col in ("loss_benign", "loss_harmful"))
    note = "<br><sup>a group's line breaks on the steps whose batch holds none of its examples</sup>" if gaps else ""
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title + note, height=640, width=1100)
    return fig


def drift_scale_min(cos: pd.Series) -> Optional[float]:
    """The lower end of a drift map's colour scale: the lowest cosine, rounded down to 0.05, so that how far each
    layer drifted can be read (a full -1..1 scale would be one colour); None when nothing positive was measured."""
    low = cos.min()
    return float(np.floor(low * 20) / 20) if low == low and low > 0 else None


def direction_drift(frame: pd.DataFrame, *, title: str = "Refusal direction drift per layer",
                    zmin: Optional[float] = None) -> go.Figure:
    """``cos(r_t, r_0)`` per layer over steps, from :attr:`drtk.training.DirectionDrift.frame` (the difference in
    means at the last post-instruction token on its probe prompts).

    ``zmin``: the lower end of the colour scale (default: the lowest cosine measured, rounded down to 0.05), so
    figures of several runs can share one scale."""
    pivot = frame.pivot(index="layer", columns="step", values="cos")
    low = frame.loc[frame.cos.idxmin()] if frame.cos.notna().any() else None
    zmin = zmin if zmin is not None else drift_scale_min(frame.cos)
    scale = dict(colorscale="Viridis", zmin=zmin, zmax=1.0) if zmin is not None else dict(colorscale="RdBu", zmin=-1, zmax=1)
    fig = go.Figure(go.Heatmap(z=pivot.values, x=list(pivot.columns), y=list(pivot.index), **scale,
                               colorbar=dict(title=dict(text="cos(r_t, r_0)", side="right"))))
    sub = "" if low is None else (f"<br><sup>lowest: layer {int(low.layer)} at step {int(low.step)}, cos {low.cos:.3f}; "
                                  f"colour scale {scale['zmin']:g} to {scale['zmax']:g}</sup><br><sup>a blank row: no "
                                  "direction there (layer 0 reads the same template token for every prompt)</sup>")
    fig.update_layout(title=title + sub, xaxis_title="step", yaxis_title="layer", margin=dict(t=130))
    return fig
