import plotly.graph_objects as go

from drtk.viz.evaluation import asr_bars, asr_vs_kl, asr_vs_prefill


def _row(attack, asr, knob=None, value=None, kl=None, source=None):
    return {"attack": attack, "asr": asr, "ci_low": max(0, asr - 0.1), "ci_high": min(1, asr + 0.1), "n": 10,
            "knob": knob, "knob_value": value, "kl": kl, "params": {"source": source}}


def test_figures_from_results():
    res = {"model": "m", "judge": {"name": "keyword"}, "attacks": {
        "none": _row("none", 0.1), "prefill[k=4]": _row("prefill", 0.5, "k", 4, source="ablation"),
        "prefill[k=16]": _row("prefill", 0.8, "k", 16, source="ablation"),
        "actadd[coeff=1]": _row("actadd", 0.6, "coeff", 1, 0.05), "actadd[coeff=2]": _row("actadd", 0.9, "coeff", 2, 0.2)}}
    bars = asr_bars(res)
    assert isinstance(bars, go.Figure) and list(bars.data[0].x)[0] == "none"
    assert list(asr_vs_kl(res).data[0].x) == [0.05, 0.2]
    assert list(asr_vs_prefill(res).data[0].x) == [4, 16]


def test_prefill_figures_mark_a_floor_hollow_and_say_so():
    from drtk.viz.story import asr_vs_prefill_models

    floor = _row("prefill", 0.0, "k", 16, source="ablation") | {"metadata": {"refusing_prefills": 7}}
    res = {"attacks": {"prefill[k=4]": _row("prefill", 0.5, "k", 4, source="ablation"), "prefill[k=16]": floor}}
    for fig in (asr_vs_prefill(res), asr_vs_prefill_models({"defended": res})):
        assert list(fig.data[0].marker.symbol) == ["circle", "circle-open"]
        assert fig.data[0].hovertext[1] == "a floor: 7 of 10 prefills were refusals"
        assert "hollow markers: floors" in fig.layout.title.text
    clean = {"attacks": {"prefill[k=4]": _row("prefill", 0.5, "k", 4, source="ablation")}}
    for fig in (asr_vs_prefill(clean), asr_vs_prefill_models({"aligned": clean})):
        assert fig.data[0].marker.symbol is None and "floor" not in fig.layout.title.text


def test_asr_vs_over_refusal_places_each_model_at_its_pooled_over_refusal():
    from drtk.viz.story import asr_vs_over_refusal

    def doc(asr, k):
        return {"attacks": {"fresh-ablation[strength=1.0]": _row("fresh-ablation", asr), "none": _row("none", 0.0)},
                "over_refusal": {"harmless": {"k": k, "n": 10}, "borderline": {"k": k, "n": 10}}}

    fig = asr_vs_over_refusal({"aligned": doc(0.9, 1), "adaptive": doc(0.1, 8), "no-benign": {"attacks": {}}})
    points = [t for t in fig.data if t.name and ": " in t.name]
    assert [t.name for t in points] == ["aligned: fresh-ablation[strength=1.0]", "adaptive: fresh-ablation[strength=1.0]"]
    assert [(t.x[0], t.y[0]) for t in points] == [(0.1, 0.9), (0.8, 0.1)]


def test_an_attack_keeps_its_marker_across_figures_and_coherent_asr_shows_beneath():
    from drtk.viz.story import asr_vs_kl_models, asr_vs_over_refusal

    fresh = _row("fresh-ablation", 0.9, kl=0.3) | {"coherence": {"rate": 0.5}}
    doc = {"judge": {"name": "keyword"}, "over_refusal": {"harmless": {"k": 1, "n": 10}},
           "attacks": {"direction-ablation[strength=1.0]": _row("direction-ablation", 0.8, kl=0.1),
                       "fresh-ablation[strength=1.0]": fresh}}
    marker = lambda fig: {t.name.split(": ")[1]: t.marker.symbol for t in fig.data if t.name and ": " in t.name}  # noqa: E731
    assert marker(asr_vs_over_refusal({"m": doc})) == marker(asr_vs_kl_models({"m": doc})) == {
        "direction-ablation[strength=1.0]": "circle", "fresh-ablation[strength=1.0]": "square"}
    over = asr_vs_over_refusal({"m": doc})
    points = {t.name: t.x[0] for t in over.data if t.name and ": " in t.name}
    left, right = sorted(points.values())  # both at over-refusal 0.1, spread apart around it
    assert left < 0.1 < right and abs((left + right) / 2 - 0.1) < 1e-9
    coherent = [t for t in over.data if not t.name and t.mode == "lines+markers"]
    assert len(coherent) == 1 and list(coherent[0].y) == [0.9, 0.5]  # from the judge's ASR down to the coherent one


def test_html_only_skips_static_copies_and_restores_them(tmp_path, monkeypatch):
    from drtk.viz import core

    exported = []
    monkeypatch.setattr(core, "static_export_available", lambda: True)
    monkeypatch.setattr(go.Figure, "write_image", lambda self, path, **kw: exported.append(path))
    fig = go.Figure(go.Bar(x=["a"], y=[1]))
    with core.html_only():
        written = core.save_figure(fig, tmp_path, "inside")
    assert [p.name for p in written] == ["inside.html"] and not exported
    written = core.save_figure(fig, tmp_path, "after")
    assert [p.name for p in written] == ["after.html", "after.png", "after.svg"] and len(exported) == 2


def test_asr_before_after_draws_coherent_share_over_each_models_bar():
    from drtk.viz.story import asr_before_after

    looped = _row("per-layer-ablation", 1.0) | {"coherence": {"rate": 0.25}}
    fig = asr_before_after({"aligned": {"judge": {"name": "keyword"}, "attacks": {"per-layer[k=1]": looped}},
                            "plain": {"judge": {"name": "keyword"}, "attacks": {"per-layer[k=1]": _row("none", 0.5),
                                                                                 "extra": _row("none", 0.1)}}})
    bars = [(t.name, list(t.y), t.offsetgroup, t.showlegend) for t in fig.data]
    # the pale full bar, then the solid coherent one (which carries the legend entry); an attack a model was
    # not given is a zero bar marked n/a
    assert bars == [("aligned", [1.0, 0], "0", False), ("aligned", [0.25, None], "0", None), ("plain", [0.5, 0.1], "1", True)]
    assert list(fig.data[0].text) == ["", "n/a"] and list(fig.data[2].text) == ["", ""]
    assert fig.data[0].opacity < 1 and fig.data[2].opacity == 1 and "coherent" in fig.layout.title.text


def test_configurations_keep_distinct_colours_beside_the_demos_models():
    from drtk.viz.story import _color

    names = ["deeprefusal", "adaptive", "adaptive#1"] + [f"option {i}" for i in range(13)]
    colours = [_color(name, i) for i, name in enumerate(names)]
    assert colours[1] == colours[2]  # a repeat takes its configuration's colour
    assert len(set(colours)) == len(names) - 1


def test_asr_vs_kl_models_tells_models_by_colour_and_attacks_by_marker():
    from drtk.viz.story import asr_vs_kl_models

    docs = {"aligned": {"attacks": {"a[x=1]": _row("a", 0.9, kl=0.1), "b[y=1]": _row("b", 0.8, kl=0.2), "none": _row("none", 0.0)}},
            "adaptive": {"attacks": {"a[x=1]": _row("a", 0.1, kl=0.1)}}}
    fig = asr_vs_kl_models(docs)
    points = [t for t in fig.data if t.x[0] is not None]
    assert [(t.name, t.x[0], t.y[0]) for t in points] == [("aligned: a[x=1]", 0.1, 0.9), ("aligned: b[y=1]", 0.2, 0.8),
                                                          ("adaptive: a[x=1]", 0.1, 0.1)]
    assert points[0].marker.symbol == points[2].marker.symbol != points[1].marker.symbol  # one marker per attack
    assert points[0].marker.color == points[1].marker.color != points[2].marker.color  # one colour per model
    legends = {(t.legend or "legend", t.name) for t in fig.data if t.x[0] is None}
    assert legends == {("legend", "aligned"), ("legend", "adaptive"), ("legend2", "a[x=1]"), ("legend2", "b[y=1]")}


def test_asr_vs_over_refusal_keeps_each_attacks_marker_and_draws_the_target():
    from drtk.viz.story import asr_vs_over_refusal

    over = {"harmless": {"k": 1, "n": 10}, "borderline": {"k": 1, "n": 10}}
    docs = {"aligned": {"attacks": {"a": _row("a", 0.9), "b": _row("b", 0.8)}, "over_refusal": over},
            "adaptive": {"attacks": {"b": _row("b", 0.1)}, "over_refusal": over}}  # no "a": "b" keeps its marker
    fig = asr_vs_over_refusal(docs, attacks=("a", "b"), over_refusal_target=0.15, target_label="target: 5% + 10")
    symbols = {t.name: t.marker.symbol for t in fig.data}
    assert symbols["aligned: b"] == symbols["adaptive: b"] != symbols["aligned: a"]
    assert [sh.x0 for sh in fig.layout.shapes] == [0.15] and fig.layout.annotations[0].text == "target: 5% + 10"


def test_direction_drift_spans_the_measured_cosines():
    import pandas as pd

    from drtk.viz.training import direction_drift

    close = pd.DataFrame({"step": [4, 4, 8, 8], "layer": [1, 2, 1, 2], "cos": [0.99, 0.97, 0.93, 0.88]})
    fig = direction_drift(close)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.85, 1.0) and "layer 2 at step 8" in fig.layout.title.text
    flipped = close.assign(cos=[0.9, 0.5, -0.2, 0.1])  # a direction that turned around: the full signed scale
    assert (direction_drift(flipped).data[0].zmin, direction_drift(flipped).data[0].zmax) == (-1, 1)


def test_cosine_maps_leave_a_layer_without_a_direction_blank_and_name_the_same_layer_range():
    import numpy as np
    import torch

    from drtk.viz.directions import cosine_heatmap_compare, cosine_heatmap_layers

    g = torch.Generator().manual_seed(0)
    before = torch.randn(2, 4, 8, generator=g)
    before[:, 0] = 0  # layer 0: the same template token for every prompt, a zero difference of means
    after = before.clone()
    after[-1, 3] = -after[-1, 3]  # layer 3 flips
    z = np.array(cosine_heatmap_layers(before).data[0].z, dtype=float)
    assert np.isnan(z[0]).all() and np.isnan(z[:, 0]).all() and np.allclose(np.diagonal(z)[1:], 1)
    fig = cosine_heatmap_compare(before, after)
    assert "cos -1.000 (layer 3) to 1.000" in fig.layout.title.text and "blank" in fig.layout.title.text
