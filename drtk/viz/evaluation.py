"""Evaluation figures, drawn from a ``results.json`` document. They return figures and never save."""

from typing import Any

import plotly.graph_objects as go


def asr_bars(results: dict[str, Any]) -> go.Figure:
    """ASR per attack setting with its 95% Wilson interval as error bars."""
    attacks = results["attacks"]
    labels = list(attacks)
    asr = [attacks[k]["asr"] for k in labels]
    fig = go.Figure(go.Bar(
        x=labels, y=asr, text=[f"{a:.0%}" for a in asr], textposition="outside",
        error_y=dict(type="data", symmetric=False, array=[attacks[k]["ci_high"] - attacks[k]["asr"] for k in labels],
                     arrayminus=[attacks[k]["asr"] - attacks[k]["ci_low"] for k in labels]),
        hovertext=[f"n={attacks[k]['n']}" for k in labels],
    ))
    fig.update_layout(title=f"Attack success on {results['model']} (judge: {results['judge']['name']}, 95% Wilson CI)",
                      yaxis=dict(title="ASR", range=[0, 1.1], tickformat=".0%"), xaxis_title="attack")
    return fig


def asr_vs_kl(results: dict[str, Any]) -> go.Figure:
    """ASR against the KL cost on benign prompts, one line per attack along its strength knob."""
    fig = go.Figure()
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in results["attacks"].values():
        if a.get("kl") is not None:
            groups.setdefault(a["attack"], []).append(a)
    for name, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["kl"])
        fig.add_trace(go.Scatter(
            x=[r["kl"] for r in rows], y=[r["asr"] for r in rows], mode="lines+markers", name=name,
            text=[f"{r['knob']}={r['knob_value']}" if r.get("knob") else name for r in rows],
            error_y=dict(type="data", symmetric=False, array=[r["ci_high"] - r["asr"] for r in rows],
                         arrayminus=[r["asr"] - r["ci_low"] for r in rows]),
        ))
    fig.update_layout(title="Attack success vs capability cost", xaxis_title="KL(unattacked ‖ attacked) on benign answers",
                      yaxis=dict(title="ASR", range=[0, 1.05], tickformat=".0%"))
    return fig


def asr_vs_prefill(results: dict[str, Any]) -> go.Figure:
    """ASR against the number of prefilled tokens, one line per prefill-type attack."""
    fig = go.Figure()
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in results["attacks"].values():
        if a.get("knob") == "k" and a["attack"].startswith("prefill"):
            groups.setdefault(f"{a['attack']} ({a['params'].get('source')})", []).append(a)
    for name, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["knob_value"])
        fig.add_trace(go.Scatter(
            x=[r["knob_value"] for r in rows], y=[r["asr"] for r in rows], mode="lines+markers", name=name,
            error_y=dict(type="data", symmetric=False, array=[r["ci_high"] - r["asr"] for r in rows],
                         arrayminus=[r["asr"] - r["ci_low"] for r in rows]),
        ))
    fig.update_layout(title="Attack success vs prefill length", xaxis_title="prefilled tokens (k)",
                      yaxis=dict(title="ASR", range=[0, 1.05], tickformat=".0%"))
    return fig
