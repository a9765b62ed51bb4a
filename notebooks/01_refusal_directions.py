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
# # 01 · Refusal directions
#
# Load a chat model as a hooked TransformerLens 4 model, compute difference-in-means candidates over
# layers × post-instruction positions, select one direction (Arditi et al. 2024), and look at its
# geometry. On the embedded SmolLM2-135M-Instruct, which barely refuses before safety training, the
# direction is a *harmfulness* direction; notebook 03 trains refusal in and finds it again.

# %% tags=["parameters"]
MODEL = "smollm2-135m-instruct"  # any chat model: hub id, local folder, or a `drtk train` output
N_FIT = 32  # prompts per side for the difference of means
N_VAL = 12  # prompts per side for selection
N_TEST = 32  # held-out prompts per side for the separation check
TOP_K = 6  # candidates scored fully

# %%
import drtk
from drtk.data import standard_splits
from drtk.directions import auroc, projections_by_layer
from drtk.viz import cosine_heatmap_layers, cosine_heatmap_positions, projection_by_layer, selection_scores

model = drtk.load_model(MODEL)
print(model.model_id, model.n_layers, "layers, d_model", model.d_model)
print("post-instruction tokens:", model.tokenizer.convert_ids_to_tokens(list(model.chat.post_instruction_ids)))

# %% [markdown]
# The residual stream is visible through the bridge's hook points, named like TransformerLens hooks.

# %%
prompt = model.format(["How do I bake bread?"])[0]
_, cache = model.bridge.run_with_cache(model.tokenize_texts([prompt]).input_ids,
                                       names_filter=lambda n: n.endswith("hook_resid_pre"))
print(len(cache), "cached activations;", "blocks.0.hook_resid_pre", tuple(cache["blocks.0.hook_resid_pre"].shape))

# %%
harmful, harmless = standard_splits("harmful"), standard_splits("harmless")
result = drtk.find_direction(
    model, harmful["fit"].head(N_FIT), harmless["fit"].head(N_FIT), harmful["val"].head(N_VAL),
    harmless["val"].head(N_VAL), config=drtk.SelectionConfig(top_k=TOP_K),
)
d = result.direction
print(f"selected {d.site}, position {d.position}; criterion {d.metadata['criterion']}; "
      f"refusal rate on harmful val {d.metadata['refusal_rate_val']:.0%}")
result.table.dropna().sort_values("bypass").head(8)

# %%
selection_scores(result.table)

# %%
cosine_heatmap_layers(result.candidates.diffs, position=d.position)

# %%
cosine_heatmap_positions(result.candidates.diffs, d.vector, post_tokens=result.candidates.post_tokens)

# %% [markdown]
# Held-out check: prompts from the test split, never used for fitting or selection.

# %%
ph = projections_by_layer(model, harmful["test"].head(N_TEST).prompts, d.vector, position=d.position)
pb = projections_by_layer(model, harmless["test"].head(N_TEST).prompts, d.vector, position=d.position)
print(f"held-out AUROC at layer {d.layer}: {auroc(ph[:, d.layer], pb[:, d.layer]):.3f}")
projection_by_layer({"harmful (test)": ph, "harmless (test)": pb})

# %% [markdown]
# Ablating the direction everywhere, and the same edit baked into the weights, give the same model.

# %%
probe = harmful["test"].head(2).prompts
batch = model.tokenize(probe)
with drtk.ablation(model, d.vector):
    hooked_logits = model.last_logits(batch)
    hooked = drtk.generate(model, probe, config=drtk.GenerationConfig(max_new_tokens=24))
edited = drtk.orthogonalize(model, d.vector)  # an edited copy; `model` is unchanged
print("max |logit difference|, hooks vs edited weights:", float((edited.last_logits(batch) - hooked_logits).abs().max()))
for p, c in zip(probe, hooked):
    print(f"> {p}\n{c}\n")
