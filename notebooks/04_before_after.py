# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Before and after
#
# Compare an aligned model with a defended one: the refusal projection per layer on harmful and harmless
# prompts, with and without the ablation attack (the "rebuilding" picture), and attack success before vs
# after with intervals. By default both are the embedded model (so the notebook runs anywhere); point
# `ALIGNED` and `DEFENDED` at `drtk demo` outputs (`DIR/aligned/model`, `DIR/deeprefusal/model`) to see the real story,
# and `DIRECTION` at its `DIR/direction` to attack with the direction the demo selected (None: one is found here on
# the aligned model, at a small size).

# %% tags=["parameters"]
ALIGNED = "smollm2-135m-instruct"
DEFENDED = "smollm2-135m-instruct"
DIRECTION = None  # or a `drtk directions` output, e.g. "runs/demo/direction"
N = 8  # held-out prompts per set

# %%
import drtk
from drtk.attacks import AttackContext, get_attack
from drtk.data import standard_splits
from drtk.directions import per_layer_directions, projections_by_layer
from drtk.evaluation import evaluate
from drtk.viz.story import asr_before_after, projection_panels

harmful, harmless = standard_splits("harmful"), standard_splits("harmless")
aligned = drtk.load_model(ALIGNED)
if DIRECTION is not None:
    direction = drtk.Direction.load(DIRECTION)
else:
    direction = drtk.find_direction(aligned, harmful["fit"].head(32), harmless["fit"].head(32), harmful["val"].head(12),
                                    harmless["val"].head(12), config=drtk.SelectionConfig(top_k=4)).direction
direction.layer, direction.position

# %%
panels, results = {}, {}
for name, path in (("aligned", ALIGNED), ("defended", DEFENDED)):
    model = drtk.load_model(path)
    own = per_layer_directions(model, harmful["fit"].head(32).prompts, harmless["fit"].head(32).prompts,
                               position=direction.position).vector
    panels[name] = {}
    for group, splits in (("harmful", harmful), ("harmless", harmless)):
        prompts = splits["test"].head(N).prompts
        panels[name][group] = projections_by_layer(model, prompts, own, position=direction.position)
        with drtk.ablation(model, direction.vector):
            panels[name][f"{group}, ablation attack"] = projections_by_layer(model, prompts, own, position=direction.position)
    ctx = AttackContext(direction=direction, generation=drtk.GenerationConfig(max_new_tokens=48))
    ev = evaluate(model, [get_attack("none"), get_attack("direction-ablation")], harmful["test"].head(N), context=ctx)
    results[name] = ev.to_results()
projection_panels(panels, title="Projection onto each model's own refusal direction, per layer")

# %%
asr_before_after(results)
