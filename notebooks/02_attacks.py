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
# # 02 · Attacks
#
# Run the attack battery on a model and judge it honestly: attack success rate (ASR) with a 95% Wilson
# interval and n, over-refusal beside it, and the judge named. Attacks share one interface
# (`attack.run(model, prompts, context=...)`); adaptive ones (`fresh-ablation`, `per-layer-ablation`)
# re-extract directions on the attacked model from fitting prompts disjoint from the evaluation prompts.
# `prefill` puts the attacked model's own answer under ablation in its mouth; a defended model often refuses
# even then, and such a prefill counts as a failed attack (the log and the report say how many). To prefill
# every model with the same harmful text, use `prefill:k=20:source=reference` and set
# `AttackContext(reference=drtk.load_model("smollm2-135m-instruct"))`, a model that answers.

# %% tags=["parameters"]
MODEL = "smollm2-135m-instruct"  # e.g. a refusal-trained model folder from notebook 03 or `drtk train`
N_EVAL = 8  # held-out harmful prompts per attack
ATTACKS = "none,prefill:k=20,direction-ablation:direction_source=fresh,per-layer-ablation:k=1,templates:template=screenplay"
MAX_NEW_TOKENS = 64

# %%
import drtk
from drtk.attacks import AttackContext, parse_attack_spec
from drtk.data import standard_splits
from drtk.evaluation import evaluate
from drtk.viz.evaluation import asr_bars

model = drtk.load_model(MODEL)
harmful, harmless = standard_splits("harmful"), standard_splits("harmless")
attacks = [a for spec in ATTACKS.split(",") for a in parse_attack_spec(spec)]
context = AttackContext(
    harmful_fit=harmful["fit"].head(32).prompts, harmless_fit=harmless["fit"].head(32).prompts,
    harmful_val=harmful["val"].head(12).prompts, harmless_val=harmless["val"].head(12).prompts,
    generation=drtk.GenerationConfig(max_new_tokens=MAX_NEW_TOKENS),
)
ev = evaluate(model, attacks, harmful["test"].head(N_EVAL), harmless=harmless["test"].head(N_EVAL), context=context)
ev.table()

# %%
results = ev.to_results()
asr_bars(results)

# %% [markdown]
# Every verdict can be read next to its completion: the keyword judge is cheap and known to be fooled.

# %%
for rec in ev.completion_records()[:6]:
    print(f"[{rec['attack']}] {rec['verdict']}: {rec['completion'][:160]!r}")
