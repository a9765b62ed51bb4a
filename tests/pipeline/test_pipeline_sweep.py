import pytest

from drtk.errors import ConfigError
from drtk.pipeline.demo import run_demo
from drtk.pipeline.sweep import run_sweep, tradeoff_figure


def test_sweep_trains_and_evaluates_each_configuration_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr("drtk.viz.core.static_export_available", lambda: False)
    demo = tmp_path / "demo"
    run_demo(demo, model="drtk-tiny-chat", size="smoke", defences=("deeprefusal",))
    out = tmp_path / "sweep"
    kw = dict(aligned=str(demo / "aligned" / "model"), direction=str(demo / "direction"), probabilities=(0.0, 1.0),
              recovery=(True, False), size="smoke", steps=1, limit=2)
    table = run_sweep(out, **kw)
    assert len(table) == 4 and set(table.p) == {0.0, 1.0} and set(table.recovery) == {True, False}
    assert {"asr:none", "asr:prefill[k=20]", "over_refusal:borderline", "kl"} <= set(table.columns)
    assert table.filter(like="asr:").stack().between(0, 1).all()
    assert (out / "sweep.csv").exists()
    cfg = (out / "train-p1-norecovery" / "config.json").read_text()
    assert '"recovery": false' in cfg and '"p_site": 1.0' in cfg
    assert len(tradeoff_figure(table).data) == 2  # one line per recovery setting

    # every configuration is a cached stage: a second call trains nothing
    monkeypatch.setattr("drtk.pipeline.sweep._cli", lambda args: pytest.fail(f"re-ran {args[0]}"))
    assert run_sweep(out, **kw).equals(table)


def test_sweep_rejects_empty_budgets(tmp_path):
    with pytest.raises(ConfigError, match="steps and limit"):
        run_sweep(tmp_path, aligned="a", direction="d", steps=0)


def test_configurations_on_one_point_share_one_label():
    import pandas as pd

    table = pd.DataFrame({"p": [0.0, 0.5, 1.0], "recovery": [True] * 3, "asr:prefill[k=20]": [0.6, 0.5, 0.5],
                          "over_refusal:borderline": [0.2, 0.25, 0.25]})
    fig = tradeoff_figure(table)
    assert list(fig.data[0].text) == ["p=0", "p=0.5, 1", ""] and fig.layout.xaxis.title.text == "over-refusal, borderline"
