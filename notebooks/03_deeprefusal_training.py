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
# # 03 · Rebuilding refusal: refusal training, then DeepRefusal
#
# The embedded SmolLM2-135M-Instruct answers harmful requests, so it first gets ordinary refusal
# training (surface alignment). DeepRefusal then fine-tunes the aligned model while probabilistically
# ablating its refusal direction at every layer's residual input, attention output and MLP output, on
# response tokens (here also the chat template's post-instruction tokens before the response, where the refusal
# is decided), so it learns to refuse from a "jailbroken" internal state. The schedule's two knobs
# are explicit: `p_site` (is this site ablated in this pass) and `p_token` (is this token ablated); the
# realized fraction of ablated cells is logged every step.

# %% tags=["parameters"]
MODEL = "smollm2-135m-instruct"
STEPS = 6  # optimizer steps per training run (use ~100 for a real run)
N_TRAIN = 16  # prompts per side
OUT = "runs/notebook03"  # where the trained models are saved

# %%
import drtk
from drtk.data import standard_splits
from drtk.schedules import AblationSchedule
from drtk.training import (DataConfig, DirectionDrift, TrainConfig, Trainer, TrainingSet, build_training_set, save_merged,
                           save_training_record)
from drtk.viz.training import direction_drift, schedule_heatmap, training_curves

drtk.keep_freed_memory()  # this process reuses the memory training frees: faster steps on CPU, the same weights
model = drtk.load_model(MODEL)
harmful, harmless, borderline = (standard_splits(n) for n in ("harmful", "harmless", "borderline"))
data_cfg = DataConfig(max_response_tokens=32, refusal_text="I'm sorry, but I can't help with that.", borderline_repeat=2)
data = build_training_set(model, harmful=harmful["train"].head(N_TRAIN).prompts,
                          harmless=harmless["train"].head(N_TRAIN).prompts,
                          borderline=borderline["train"].head(N_TRAIN // 2).prompts, config=data_cfg)
print(len(data.examples), "examples")

# %% [markdown]
# Surface alignment: ordinary refusal training, the recipe of `docs/training.md` (full fine-tuning,
# one refusal text, a per-example mean loss weighted 0.35 benign / 0.65 harmful, the first 4 response tokens
# weighted 5x, and the unlikelihood of the refusal's opening on benign answers).

# %%
cfg = TrainConfig.for_method("refusal", steps=STEPS, lora=False, lr=5e-5, loss_reduction="mean", benign_weight=0.35,
                             harmful_weight=0.65, decision_tokens=4, decision_weight=5.0, refusal_contrast=2.0,
                             data=data_cfg, checkpoint_every=None)
result = Trainer(model, data, cfg).train()
training_curves(result.history)

# %%
direction = drtk.find_direction(model, harmful["fit"].head(32), harmless["fit"].head(32), harmful["val"].head(12),
                                harmless["val"].head(12), config=drtk.SelectionConfig(top_k=4)).direction
print(direction.site, direction.position, direction.metadata["refusal_rate_val"])

# %% [markdown]
# DeepRefusal from the aligned model: the paper's schedule (p = 0.5 per site and per token) over the response
# and the template's post-instruction tokens (`region_lead="post"`, as in `drtk demo`; leave it out for the
# paper's response-only region), and recovery examples (a harmful prefix generated with the direction ablated,
# then a refusal; the prefix is not trained on).

# %%
schedule = AblationSchedule.paper(0.5, region_lead="post")
schedule_heatmap(schedule, n_layers=model.n_layers, direction_layer=direction.layer)

# %%
dr_data = build_training_set(model, harmful=harmful["train"].head(N_TRAIN).prompts,
                             harmless=harmless["train"].head(N_TRAIN).prompts,
                             config=DataConfig(max_response_tokens=32, recovery=True), direction=direction.vector)
drift = DirectionDrift(harmful["fit"].head(16).prompts, harmless["fit"].head(16).prompts, every=max(1, STEPS // 3))
dr_cfg = TrainConfig.for_method("deeprefusal", steps=STEPS, schedule=schedule, checkpoint_every=None)
dr = Trainer(model, dr_data, dr_cfg, direction=direction, callbacks=[drift]).train()
print("realized ablation rate:", dr.history["ablation_rate"].mean(), "(p_site x p_token = 0.25)")
training_curves(dr.history)

# %%
direction_drift(drift.frame)

# %%
save_merged(model, f"{OUT}/deeprefusal")  # loadable with drtk.load_model
# with the prompts it learned from: `drtk eval` of the folder leaves them out of the prompts it attacks
save_training_record(f"{OUT}/deeprefusal", base=MODEL, method="refusal, then deeprefusal",
                     prompts=TrainingSet(data.examples + dr_data.examples).prompts())
