"""Figures of training: ablation schedules, training curves, direction drift. Each returns a ``go.Figure``."""

from typing import Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from drtk.schedules import AblationSchedule


def schedule_heatmap(
    schedule: AblationSchedule, *, n_layers: int, max_depth: int = 64, step: int = 0,
    direction_layer: Optional[int] = None,
) -> go.Figure:
    """Expected ablation probability of a region token at each (layer, token depth) at ``step``."""
    grid = schedule.probability_grid(step, n_layers, max_depth, direction_layer)
    fig = go.Figure(go.Heatmap(z=grid.cpu().numpy(), x=list(range(max_depth)), y=list(range(n_layers)),
                               colorscale="Viridis", zmin=0, zmax=1, colorbar=dict(title="p(ablate)")))
    lead = schedule.region_lead
    start = {0: "", "post": ", from the template's post-instruction tokens"}.get(lead, f", from {lead} tokens before it")
    fig.update_layout(
        title=f"Ablation probability at step {step} (p_site={schedule.p_site}, p_token={schedule.p_token}, "
              f"region={schedule.region}; mean {float(grid.mean()):.3f})",
        xaxis_title=f"token depth into the {schedule.region} region{start}", yaxis_title="layer",
    )
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


def training_curves(history: pd.DataFrame) -> go.Figure:
    """Loss (total and per group), realized ablation rate, learning rate and gradient norm per step."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=("loss", "realized ablation rate", "learning rate", "grad norm"))
    x = history["step"] if "step" in history else history.index
    for col, name in (("loss", "total"), ("loss_benign", "benign"), ("loss_harmful", "harmful")):
        if col in history:
            fig.add_trace(go.Scatter(x=x, y=history[col], name=name, mode="lines"), row=1, col=1)
    for col, r, c in (("ablation_rate", 1, 2), ("lr", 2, 1), ("grad_norm", 2, 2)):
        if col in history:
            fig.add_trace(go.Scatter(x=x, y=history[col], name=col, mode="lines", showlegend=False), row=r, col=c)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title="Training", height=600)
    return fig


def direction_drift(frame: pd.DataFrame) -> go.Figure:
    """``cos(r_t, r_0)`` per layer over steps, from :attr:`drtk.training.DirectionDrift.frame`."""
    pivot = frame.pivot(index="layer", columns="step", values="cos")
    low = frame.loc[frame.cos.idxmin()] if frame.cos.notna().any() else None
    if low is not None and low.cos > 0:
        # Directions that stay close to where they started: the colours span what was measured (down to the
        # lowest cosine), so how far each layer drifted can be read; a full -1..1 scale would be one colour.
        scale = dict(colorscale="Viridis", zmin=float(np.floor(low.cos * 20) / 20), zmax=1.0)
    else:
        scale = dict(colorscale="RdBu", zmin=-1, zmax=1)
    fig = go.Figure(go.Heatmap(z=pivot.values, x=list(pivot.columns), y=list(pivot.index), **scale,
                               colorbar=dict(title="cos(r_t, r_0)")))
    sub = "" if low is None else (f"<br><sup>lowest: layer {int(low.layer)} at step {int(low.step)}, cos {low.cos:.3f}; "
                                  f"colour scale {scale['zmin']:g} to {scale['zmax']:g}</sup>")
    fig.update_layout(title="Refusal direction drift per layer" + sub, xaxis_title="step", yaxis_title="layer")
    return fig
