import pytest

from drtk.errors import ConfigError, DataError
from drtk.pipeline.demo import run_demo
from drtk.pipeline.sweep import run_sweep, tradeoff_figure


def test_sweep_trains_and_evaluates_each_configuration_and_resumes(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr("drtk.viz.core.static_export_available", lambda: False)
    demo = tmp_path / "demo"
    run_demo(demo, model="drtk-tiny-chat", size="smoke", defences=("deeprefusal",))
    out = tmp_path / "sweep"
    kw = dict(aligned=str(demo / "aligned" / "model"), direction=str(demo / "direction"), probabilities=(0.0, 0.5, 1.0),
              recovery=(True, False), size="smoke", limit=2)
    table = run_sweep(out, **kw)
    assert len(table) == 6 and set(table.p) == {0.0, 0.5, 1.0} and set(table.recovery) == {True, False}
    assert {"asr:none", "asr:prefill[k=20]", "over_refusal:borderline", "over_refusal:pooled", "kl"} <= set(table.columns)
    assert table.filter(like="asr:").stack().between(0, 1).all()
    pooled = (table["over_refusal:harmless"] + table["over_refusal:borderline"]) / 2  # two sets of `limit` prompts each
    assert (table["over_refusal:pooled"] - pooled).abs().max() < 1e-12 and (table.n_benign == 4).all()
    assert (out / "sweep.csv").exists()
    md = (out / "sweep.md").read_text().splitlines()
    rows = [line for line in md if line.startswith("| 0") or line.startswith("| 1")]
    assert [r.split(" | ")[:2] for r in rows] == [["| 0", "yes"], ["| 0.5", "yes"], ["| 1", "yes"], ["| 0", "no"],
                                                   ["| 0.5", "no"], ["| 1", "no"]]
    assert all(r.count("% [") == 4 + 3 for r in rows)  # each attack and each over-refusal with its interval
    head = next(line for line in md if line.startswith("| p |"))
    assert head.startswith("| p | recovery examples | seed | none |")
    assert {line.count(" | ") for line in rows} == {head.count(" | ")}  # a header over every column
    config = lambda folder: json.loads((folder / "config.json").read_text())["train"]  # noqa: E731
    norec = config(out / "train-p1-norecovery")
    assert norec["data"]["recovery"] is False and norec["schedule"]["p_site"] == norec["schedule"]["p_token"] == 1.0
    # the sweep trains by the demo's recipe: at p = 0.5 with recovery examples it is the demo's deeprefusal stage
    assert config(out / "train-p0.5-recovery") == config(demo / "deeprefusal")
    assert len(tradeoff_figure(table).data) == 2 * 3  # per attack panel, one line per recovery setting

    # a second seed beside the first: seed 0's run is the one above (cached), seed 3's is new and pooled with it
    two = run_sweep(out, **{**kw, "probabilities": (0.5,), "recovery": (False,), "seeds": (0, 3)})
    before = table[(table.p == 0.5) & ~table.recovery].iloc[0]
    assert list(two.seed) == [0, 3] and two.iloc[0][before.index].equals(before)
    seeded = config(out / "train-p0.5-norecovery-seed3")
    assert seeded["seed"] == 3 and {**config(out / "train-p0.5-norecovery"), "seed": 3} == seeded
    lines = [line for line in (out / "sweep.md").read_text().splitlines() if line.startswith("| 0.5")]
    assert [line.split(" | ")[:3] for line in lines] == [["| 0.5", "no", "0"], ["| 0.5", "no", "3"], ["| 0.5", "no", "2 pooled"]]
    pooled_or = two["over_refusal:pooled"].mean()  # equal prompt counts: the pooled rate is the seeds' mean
    assert lines[-1].split(" | ")[-2].startswith(f"{100 * pooled_or:.0f}% [")
    assert fig_bars(tradeoff_figure(two))

    # every configuration is a cached stage: a second call trains nothing
    monkeypatch.setattr("drtk.pipeline.demo._cli", lambda args, **kw: pytest.fail(f"re-ran {args[0]}"))
    assert run_sweep(out, **kw).equals(table)
    assert "themselves refusals" not in (out / "sweep.md").read_text()
    # prefills that came out as refusals (a defended model refusing under ablation) make the rate a floor: said
    results = out / "eval-p0.5-recovery" / "results.json"
    doc = json.loads(results.read_text())
    doc["attacks"]["prefill[k=20]"]["metadata"]["refusing_prefills"] = 2
    results.write_text(json.dumps(doc))
    run_sweep(out, **kw)
    assert "prefill rates are floors: p0.5-recovery `prefill[k=20]` 2 of 2." in (out / "sweep.md").read_text()


def fig_bars(fig):
    """Whether any trace of a figure has error bars (a configuration at several seeds)."""
    return any(t.error_y.array is not None for t in fig.data)


def test_sweep_prefills_with_given_answers_and_rejects_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="nowhere.jsonl"):
        run_sweep(tmp_path / "s", aligned="a", direction="d", answers=tmp_path / "nowhere.jsonl")
    assert not (tmp_path / "s").exists()  # nothing started


def test_sweep_rejects_empty_budgets(tmp_path):
    with pytest.raises(ConfigError, match="steps and limit"):
        run_sweep(tmp_path, aligned="a", direction="d", steps=0)
    with pytest.raises(ConfigError, match="recovery settings"):
        run_sweep(tmp_path, aligned="a", direction="d", recovery=())


def test_configurations_on_one_point_share_one_label():
    import pandas as pd

    table = pd.DataFrame({"p": [0.0, 0.5, 1.0], "recovery": [True] * 3, "asr:prefill[k=20]": [0.6, 0.5, 0.5],
                          "over_refusal:pooled": [0.2, 0.25, 0.25]})
    fig = tradeoff_figure(table)  # only the attacks the table has get a panel
    assert len(fig.data) == 1 and list(fig.data[0].text) == ["p=0", "p=0.5, 1", ""]
    assert fig.layout.xaxis.title.text == "over-refusal, pooled"
    with pytest.raises(ConfigError, match="none of the attacks"):
        tradeoff_figure(table.drop(columns="asr:prefill[k=20]"))


def test_labels_of_neighbouring_points_and_points_at_an_edge_do_not_overlap():
    from drtk.viz.labels import _box, _overlap, label_positions

    # two points 10 px apart on one row, the second at the panel's right edge, and a lone point below
    x, y, texts = [0.5, 0.52, 0.1], [0.5, 0.5, 0.1], ["p=0.5", "p=0.7", "p=1"]
    spots = label_positions(x, y, texts, x_range=(0, 0.52), y_range=(0, 1), size_px=(260, 300))
    assert spots[0] != "middle right"  # that box would cover the neighbouring point
    assert "right" not in spots[1]  # cut off at the edge
    assert spots[2] == "middle right"  # nothing in its way: the first choice
    px = lambda a, b: (a / 0.52 * 260, b * 300)  # noqa: E731
    boxes = [_box(s, *px(a, b), 6.0 * len(t), 12.0, 6.0) for s, a, b, t in zip(spots, x, y, texts)]
    assert _overlap(boxes[0], boxes[1]) == 0
    # a line through two points keeps a third label off it when there is room elsewhere
    spots = label_positions([0.1, 0.5, 0.9], [0.5, 0.5, 0.5], ["", "p=1", ""], x_range=(0, 1), y_range=(0, 1),
                            size_px=(300, 300), lines=[[0, 1, 2]])
    assert spots[1] in ("top center", "bottom center")
    # so does another stroke (an error bar) where its first choice would be
    bar = [((0.55, 0.4), (0.55, 0.6))]
    assert label_positions([0.5], [0.5], ["p=1"], x_range=(0, 1), y_range=(0, 1), size_px=(300, 300))[0] == "middle right"
    assert label_positions([0.5], [0.5], ["p=1"], x_range=(0, 1), y_range=(0, 1), size_px=(300, 300),
                           segments=bar)[0] != "middle right"
    with pytest.raises(ValueError, match="differ in length"):
        label_positions([0.1], [0.1, 0.2], ["a"], x_range=(0, 1), y_range=(0, 1), size_px=(10, 10))
