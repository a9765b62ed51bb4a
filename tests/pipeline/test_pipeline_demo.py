import json

from drtk.pipeline.demo import run_demo
from drtk.pipeline.stages import StageRunner


def test_demo_runs_every_stage_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr("drtk.viz.core.static_export_available", lambda: False)  # HTML only: fast
    out = tmp_path / "demo"
    run_demo(out, model="drtk-tiny-chat", size="smoke", defences=("deeprefusal", "adaptive"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["evaluations"]) == {"aligned", "deeprefusal", "adaptive"}
    for res in metrics["evaluations"].values():
        for a in res["attacks"].values():
            assert 0 <= a["ci_low"] <= a["asr"] <= a["ci_high"] <= 1 and a["judge"] == "keyword"
    assert "lora-interpolation[lam=0.5]" in metrics["evaluations"]["deeprefusal"]["attacks"]
    report = (out / "report.md").read_text()
    assert "| attack | aligned | deeprefusal | adaptive |" in report
    for fig in ("asr_before_after", "asr_vs_prefill", "asr_vs_kl", "projection_by_layer"):
        assert (out / "figures" / f"{fig}.html").exists(), fig
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    assert "report" in stages and "attack-adaptive" in stages

    # a second run finds every stage done and redoes nothing
    calls = []
    real = StageRunner.run

    def spy(self, name, fn, **kw):
        return real(self, name, lambda d: calls.append(name) or fn(d), **kw)

    monkeypatch.setattr(StageRunner, "run", spy)
    run_demo(out, model="drtk-tiny-chat", size="smoke", defences=("deeprefusal", "adaptive"))
    assert calls == []
