"""The paper's ablations at small scale: ablation probability p and recovery examples on or off.

For each ``p`` in ``probabilities`` and each ``recovery`` setting, DeepRefusal is trained from the same
aligned model with the paper's schedule (``p_site = p_token = p``) and evaluated with the same battery;
the result is a table and an attack-success vs over-refusal trade-off figure (the paper's Tables 3-4).
Every run is a cached stage, so an interrupted sweep resumes.
"""

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import plotly.graph_objects as go

from drtk.errors import ConfigError
from drtk.pipeline.demo import DemoSize, _cli
from drtk.pipeline.stages import StageRunner, resume_flag

logger = logging.getLogger(__name__)

SWEEP_ATTACKS = "none,prefill:k=20,direction-ablation,fresh-ablation"


def _train_config(p: float, recovery: bool, steps: int) -> dict[str, Any]:
    from drtk.schedules import AblationSchedule
    from drtk.training import DataConfig, TrainConfig

    cfg = TrainConfig.for_method("deeprefusal", steps=steps, schedule=AblationSchedule.paper(p),
                                 data=DataConfig(recovery=recovery))
    return {"train": cfg.to_dict()}


def run_sweep(out_dir: "str | Path", *, aligned: str, direction: str, probabilities: Sequence[float] = (0.0, 0.3, 0.5, 0.7, 1.0),
              recovery: Sequence[bool] = (True, False), size: str = "quick", device: "str | None" = None, steps: "int | None" = None,
              limit: "int | None" = None) -> pd.DataFrame:
    """Train and evaluate every (p, recovery) configuration; returns the summary table.

    ``steps`` and ``limit`` override the size's training steps and evaluation prompts per set.
    """
    sz = DemoSize.named(size)
    steps = sz.train_steps if steps is None else steps
    limit = sz.eval_limit if limit is None else limit
    if steps < 1 or limit < 1:
        raise ConfigError(f"sweep steps and limit must be >= 1, got steps={steps}, limit={limit}")
    if not probabilities or any(not 0 <= p <= 1 for p in probabilities) or len(set(probabilities)) < len(probabilities):
        raise ConfigError(f"sweep probabilities must be distinct and in [0, 1], e.g. 0, 0.5, 1; got {list(probabilities)}")
    out = Path(out_dir)
    runner = StageRunner(out)
    dev = ["--device", device] if device else []
    rows = []
    for rec in recovery:
        for p in probabilities:
            name = f"p{p:g}-{'recovery' if rec else 'norecovery'}"
            cfg = _train_config(p, rec, steps)

            def train(folder: Path, cfg: dict = cfg) -> dict:
                (folder / "config.in.json").write_text(json.dumps(cfg))
                _cli(["train", "--model", aligned, "--method", "deeprefusal", "--direction", direction, "--config",
                      str(folder / "config.in.json"), "--n-harmful", str(sz.n_harmful), "--n-harmless",
                      str(sz.n_harmless), "--n-borderline", str(sz.n_borderline), "--out", str(folder), *dev,
                      *resume_flag(folder)])
                return {"model": str(folder / "model")}

            runner.run(f"train-{name}", train, config={"cfg": cfg, "aligned": aligned, "size": sz.name})

            def evaluate(folder: Path, name: str = name) -> dict:
                _cli(["eval", "--model", str(out / f"train-{name}" / "model"), "--reference", aligned, "--direction",
                      direction, "--attacks", SWEEP_ATTACKS, "--limit", str(limit), "--max-new-tokens",
                      str(sz.max_new_tokens), "--out", str(folder), *dev,
                      *resume_flag(folder)])
                return json.loads((folder / "results.json").read_text())

            res = runner.run(f"eval-{name}", evaluate, config={"attacks": SWEEP_ATTACKS, "limit": limit}, after=[f"train-{name}"])
            row = {"p": p, "recovery": rec}
            for label, a in res["attacks"].items():
                row[f"asr:{label}"] = a["asr"]
            for s, r in res["over_refusal"].items():
                row[f"over_refusal:{s}"] = r["rate"]
            row["kl"] = (res.get("capability") or {}).get("kl")
            rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "sweep.csv", index=False)
    return table


def tradeoff_figure(table: pd.DataFrame, *, attack: str = "asr:prefill[k=20]", over: str = "over_refusal:borderline") -> go.Figure:
    """Attack success vs over-refusal, one point per (p, recovery) configuration. Configurations that land on
    the same point share one label (``p=0.5, 1``), so none hides another."""
    fig = go.Figure()
    for rec, grp in table.groupby("recovery"):
        grp = grp.sort_values("p")
        spots: dict[tuple[float, float], list[str]] = {}
        for x, y, p in zip(grp[over], grp[attack], grp["p"]):
            spots.setdefault((x, y), []).append(f"{p:g}")
        # each point labelled once, at its first configuration
        texts = [f"p={', '.join(spots.pop((x, y)))}" if (x, y) in spots else "" for x, y in zip(grp[over], grp[attack])]
        fig.add_trace(go.Scatter(x=grp[over], y=grp[attack], mode="markers+lines+text", text=texts,
                                 textposition="top center" if rec else "bottom center",
                                 name="with recovery examples" if rec else "without recovery examples"))
    label = lambda col: col.replace("asr:", "attack success, ").replace("over_refusal:", "over-refusal, ")  # noqa: E731
    fig.update_layout(title=f"Ablation probability p: {label(attack)} against {label(over)}<br><sup>one point per "
                            "(p, recovery) configuration, connected in order of p</sup>",
                      xaxis=dict(title=label(over), range=[-0.05, 1.05], tickformat=".0%"),
                      yaxis=dict(title=label(attack), range=[-0.05, 1.05], tickformat=".0%"), width=760, height=520)
    return fig
