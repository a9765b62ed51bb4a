"""Callbacks for the training loop: probes of the refusal direction while it is being rebuilt.

* :class:`RefusalProbe` -- every N steps, the mean projection of harmful and harmless prompts'
  last post-instruction activation onto the (current) direction at its layer: does the model still
  separate them along ``r``?
* :class:`DirectionDrift` -- every N steps, the difference-in-means direction per layer recomputed on
  the training model and its cosine with the one at the start, ``cos(r_t, r_0)``: how far the defended
  model's refusal representation moves (an adaptive attacker re-extracts it).
* :class:`LivePlot` -- redraws the training curves in a notebook.
"""

from typing import Any, Sequence

import pandas as pd
import torch
from torch import Tensor

from drtk.interventions import layer_bases, unit
from drtk.training.loop import Callback


def _diff_means(model: Any, harmful: Sequence[str], harmless: Sequence[str]) -> Tensor:
    """(layer, d_model) unit difference in means at the last post-instruction token; NaN rows where the
    difference vanishes (layer 0 reads only the embedding of the same template token)."""
    from drtk.directions import collect_post_instruction

    diff = (collect_post_instruction(model, harmful, n_post=1)[0]
            - collect_post_instruction(model, harmless, n_post=1)[0])
    norm = diff.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1e-6 * norm.max(), diff / norm, torch.full_like(diff, float("nan")))


class RefusalProbe(Callback):
    """Adds ``probe_harmful``, ``probe_harmless`` (mean projection onto the unit direction at its
    layer) every ``every`` steps. Needs a trainer with a direction, or ``direction=``/``layer=``."""

    def __init__(self, harmful: Sequence[str], harmless: Sequence[str], *, every: int = 10,
                 direction: "Tensor | None" = None, layer: "int | None" = None) -> None:
        self.harmful, self.harmless, self.every = list(harmful), list(harmless), every
        self.direction, self.layer = direction, layer

    @torch.no_grad()
    def on_step_end(self, trainer: Any, step: int, metrics: dict[str, Any]) -> "dict[str, Any] | None":
        if (step + 1) % self.every:
            return None
        from drtk.directions import collect_post_instruction

        r = self.direction if self.direction is not None else trainer.provider.current()
        layer = self.layer if self.layer is not None else (trainer.provider.layer if trainer.provider else None)
        if layer is None:
            layer = trainer.model.n_layers // 2
        r = unit(layer_bases(r, trainer.model.n_layers, trainer.model.d_model)[layer, 0]).to(trainer.model.device)
        out = {}
        for name, prompts in (("probe_harmful", self.harmful), ("probe_harmless", self.harmless)):
            acts = collect_post_instruction(trainer.model, prompts, n_post=1)[0, layer]
            out[name] = float(acts @ r)
        return out


class DirectionDrift(Callback):
    """``cos(r_t, r_0)`` per layer every ``every`` steps; ``frame`` holds (step, layer, cos) rows and the
    step's row gets ``drift_min`` (the lowest cosine over layers)."""

    def __init__(self, harmful: Sequence[str], harmless: Sequence[str], *, every: int = 10) -> None:
        self.harmful, self.harmless, self.every = list(harmful), list(harmless), every
        self.r0: "Tensor | None" = None
        self.rows: list[dict[str, Any]] = []

    @torch.no_grad()
    def on_train_begin(self, trainer: Any) -> None:
        if self.r0 is None:
            self.r0 = _diff_means(trainer.model, self.harmful, self.harmless)

    @torch.no_grad()
    def on_step_end(self, trainer: Any, step: int, metrics: dict[str, Any]) -> "dict[str, Any] | None":
        if (step + 1) % self.every or self.r0 is None:
            return None
        cos = (_diff_means(trainer.model, self.harmful, self.harmless) * self.r0).sum(-1)
        self.rows += [{"step": step, "layer": layer, "cos": float(c)} for layer, c in enumerate(cos)]
        return {"drift_min": float(cos.nan_to_num(nan=float("inf")).min())}

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["step", "layer", "cos"])


class LivePlot(Callback):
    """Redraw :func:`drtk.viz.training.training_curves` in a notebook every ``every`` steps."""

    def __init__(self, every: int = 5) -> None:
        self.every = every

    def on_step_end(self, trainer: Any, step: int, metrics: dict[str, Any]) -> "dict[str, Any] | None":
        if (step + 1) % self.every:
            return None
        from IPython.display import clear_output, display

        from drtk.viz.training import training_curves

        clear_output(wait=True)
        display(training_curves(pd.DataFrame(trainer.rows + [metrics])))
        return None
