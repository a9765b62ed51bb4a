"""Evaluation figures, drawn from a ``results.json`` document. They return figures and never save."""

from typing import Any, Sequence

import plotly.graph_objects as go

from drtk.evaluation.report import refusing_prefills

FLOOR_NOTE = "hollow markers: floors, where some prefills were themselves refusals (counted as failed attacks)"


def prefill_points(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Scatter settings for prefill attacks along k: a hollow marker, and hover text that says so, where a
    point's ASR is a floor because some of its prefills were themselves refusals."""
    floors = [refusing_prefills(r) for r in rows]
    hover = [f"a floor: {f} of {r['n']} prefills were refusals" if f else f"n={r['n']}" for f, r in zip(floors, rows)]
    if not any(floors):  # plotly's own markers
        return dict(hovertext=hover)
    return dict(hovertext=hover, marker=dict(symbol=["circle-open" if f else "circle" for f in floors],
                                             size=[11 if f else 6 for f in floors],
                                             line=dict(width=[2 if f else 0 for f in floors])))


def with_floor_note(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """``title``, with the hollow-marker note beneath it when one of the plotted ``rows`` is a floor."""
    return title + (f"<br><sup>{FLOOR_NOTE}</sup>" if any(refusing_prefills(r) for r in rows) else "")


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
    """ASR against the number of prefilled tokens, one line per prefill-type attack (hollow markers: floors)."""
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
                         arrayminus=[r["asr"] - r["ci_low"] for r in rows]), **prefill_points(rows),
        ))
    fig.update_layout(title=with_floor_note("Attack success vs prefill length", sum(groups.values(), [])),
                      xaxis_title="prefilled tokens (k)",
                      yaxis=dict(title="ASR", range=[0, 1.05], tickformat=".0%"))
    return fig
