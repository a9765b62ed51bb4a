"""The end-to-end DeepRefusal story on one model, as cached stages.

1. ``baseline``   measure the model as shipped (the embedded SmolLM2 complies with harmful requests);
2. ``aligned``    surface alignment: ordinary refusal training;
3. ``direction``  find and select the refusal direction of the aligned model;
4. ``attack-aligned``  the attack battery on the aligned model;
5. ``deeprefusal``  DeepRefusal training from the aligned model with the direction of step 3 (the paper's
   schedule over the response and the chat template's post-instruction tokens before it);
6. ``adaptive``   drtk's strongest defence, trained the same way;
7. ``attack-deeprefusal`` / ``attack-adaptive``  the battery again on each defended model, plus the
   direction transferred from step 3 and LoRA-delta interpolation (fresh directions are re-extracted on
   the defended model by the adaptive attacks themselves);
8. ``report``     ``report.md``, ``metrics.json`` and ``figures/``.

Each stage is a ``drtk`` command run into its own folder; :class:`~drtk.pipeline.stages.StageRunner`
skips stages finished earlier, so an interrupted demo resumes where it stopped. Generations the stages
share are kept beside them: ``aligned-generations.jsonl`` (the aligned model's answers both defences train
on) and ``eval-generations.jsonl`` (unattacked completions: one stage's model is the next one's reference).
"""

import json
import logging
import shutil
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drtk.errors import ConfigError, StageError
from drtk.pipeline.stages import StageRunner, resume_flag
from drtk.training.config import ABLATING

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DemoSize:
    """How big the demo is. ``quick`` and ``full`` run the same stages on different amounts of work."""

    name: str
    aligned_steps: int
    train_steps: int
    n_harmful: int
    n_harmless: int
    n_borderline: int
    eval_limit: int
    max_new_tokens: int
    n_fit: int
    n_val: int
    top_k: int
    prefill_k: tuple[int, ...]
    actadd_coeff: tuple[float, ...]
    gcg: str
    lora_lambdas: tuple[float, ...]
    templates: "tuple[str, ...] | None" = None  # None: every shipped jailbreak template
    attack_fit: tuple[int, int, int] = (64, 32, 8)  # adaptive attacks: fit and val prompts per side, candidates scored
    aligned_borderline: "int | None" = None  # borderline prompts for surface alignment; None: n_borderline

    @classmethod
    def named(cls, name: str) -> "DemoSize":
        if name not in SIZES:
            raise ConfigError(f"demo size must be one of {sorted(SIZES)}, got {name!r}")
        return SIZES[name]


SIZES = {
    # "smoke" exercises every stage in seconds on the tiny test model; it measures nothing.
    "smoke": DemoSize(name="smoke", aligned_steps=2, train_steps=2, n_harmful=4, n_harmless=4, n_borderline=2,
                      eval_limit=3, max_new_tokens=8, n_fit=6, n_val=3, top_k=2, prefill_k=(2,), actadd_coeff=(1.0,),
                      gcg="gcg:steps=1:candidates=4:suffix_tokens=2:universal=true:batch_size=4", lora_lambdas=(0.5,),
                      templates=("grandmother",), attack_fit=(8, 4, 2)),
    # "quick" is a preview: the same stages on fewer steps and prompts (its numbers are rough), sized for about
    # 15 minutes on 2 CPU cores.
    "quick": DemoSize(name="quick", aligned_steps=20, train_steps=10, n_harmful=32, n_harmless=32, n_borderline=32,
                      eval_limit=8, max_new_tokens=64, n_fit=32, n_val=12, top_k=4, prefill_k=(20,), actadd_coeff=(1.0,),
                      gcg="gcg:steps=1:candidates=16:suffix_tokens=8:universal=true", lora_lambdas=(0.5,),
                      templates=("grandmother",), attack_fit=(16, 8, 2)),
    # "full" is the measured demo: 24 held-out prompts per attack, about 40 minutes on 2 CPU cores.
    "full": DemoSize(name="full", aligned_steps=100, train_steps=60, n_harmful=104, n_harmless=100, n_borderline=88,
                     eval_limit=24, max_new_tokens=64, n_fit=48, n_val=16, top_k=6, prefill_k=(5, 20), actadd_coeff=(1.0,),
                     gcg="gcg:steps=2:candidates=16:suffix_tokens=8:universal=true", lora_lambdas=(0.5,),
                     templates=("grandmother", "translation", "refusal_suppression"), aligned_borderline=160),
}


# Surface alignment of an unaligned model (docs/training.md, "Surface alignment of the embedded model"): full
# fine-tuning, a per-example mean loss weighted 0.35 benign / 0.65 harmful (the paper's 0.8 / 0.2 is for
# fine-tuning a model that already refuses), one refusal text, the first 4 response tokens weighted 5x, the
# unlikelihood of the refusal's opening on benign answers, and every borderline prompt (``full``: all 144 of the
# train and fit splits) twice over.
SURFACE_ALIGNMENT = ["--full", "--lr", "5e-5", "--loss-reduction", "mean", "--benign-weight", "0.35",
                     "--harmful-weight", "0.65", "--borderline-repeat", "2", "--decision-tokens", "4",
                     "--decision-weight", "5", "--refusal-text", "I'm sorry, but I can't help with that.",
                     "--refusal-contrast", "2"]
# Both defences: full fine-tuning from the aligned model with equal group weights and each borderline prompt (full: 88)
# twice over; each method keeps its own schedule (deeprefusal: the paper's p = 0.5 on response tokens and on the
# template's post-instruction tokens before them, where the refusal is decided and the direction read; adaptive:
# prompt and response tokens, fresh and per-layer directions, attacker steps, and half the benign rows answered
# with half the direction added to their prompt tokens). Both train the size's steps: the adaptive stage of ``full``
# trains half the 120 steps of ``drtk train --method adaptive``, without its latent adversary (two more forward and
# backward passes on a quarter of the steps), for the demo's time budget.
DEFENCE = ["--full", "--lr", "3e-5", "--benign-weight", "0.5", "--harmful-weight", "0.5", "--borderline-repeat", "2"]
DEFENCE_METHOD_FLAGS = {"deeprefusal": ["--region-lead", "post"], "adaptive": ["--latent-adversary", "0"]}


def _recipe(method: str) -> list[str]:
    """The training flags of a demo stage."""
    return SURFACE_ALIGNMENT if method == "refusal" else DEFENCE + DEFENCE_METHOD_FLAGS.get(method, [])


def _train_key(common: dict[str, Any], method: str) -> dict[str, Any]:
    """A training stage's cache key: its flags and the method's defaults, so a drtk whose defaults for the
    method changed trains the stage again instead of reusing a model trained by another recipe. Options at
    an off value are left out, so a drtk that only adds options (off by default) keeps the stage."""
    from drtk.training import TrainConfig

    return {**common, "recipe": _recipe(method), "defaults": _set_options(_without_gated(TrainConfig.for_method(method).to_dict()))}


#: Options whose own settings (the fields named ``<option>_...``) act only while the option is on: left out of a
#: stage key with it, so adding such an option with its settings keeps the stages of an existing demo folder.
_GATED = ("latent_adversary",)


def _without_gated(d: dict[str, Any]) -> dict[str, Any]:
    off = [name for name in _GATED if not d.get(name)]
    return {k: v for k, v in d.items() if not any(k == name or k.startswith(name + "_") for name in off)}


def _set_options(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without the entries at an off value (None, zero, False, empty), nested dicts included."""
    out = {}
    for k, v in d.items():
        v = _set_options(v) if isinstance(v, dict) else v
        if not (v is None or v is False or (isinstance(v, (int, float)) and v == 0) or v in ((), [], {})):
            out[k] = v
    return out


def _cli(args: list[str], *, static_figures: bool = True) -> None:
    from drtk.cli import main
    from drtk.viz import html_only

    with nullcontext() if static_figures else html_only():  # Ctrl-C propagates: the demo's hint, not the command's
        rc = main(args, nested=True)
    if rc != 0:
        raise StageError(f"`drtk {' '.join(args)}` exited with code {rc} (its error is printed above)")


def _battery(size: DemoSize, *, defended: bool, source: str) -> str:
    ks = "/".join(str(k) for k in size.prefill_k)
    coeffs = "/".join(str(c) for c in size.actadd_coeff)
    templates = "templates" + (":template=" + "/".join(size.templates) if size.templates else "")
    attacks = ["none", f"prefill:k={ks}:source={source}", "direction-ablation", "fresh-ablation", "per-layer-ablation:k=1",
               f"actadd:coeff={coeffs}", f"prefill+ablation:k=20:source={source}", templates, size.gcg]
    if defended:
        lams = "/".join(str(v) for v in size.lora_lambdas)
        attacks.append(f"lora-interpolation:lam={lams}")
    return ",".join(attacks)


def run_demo(out_dir: "str | Path", *, model: str = "smollm2-135m-instruct", size: str = "full",
             device: "str | None" = None, defences: tuple[str, ...] = ("deeprefusal", "adaptive")) -> dict[str, Any]:
    """Run (or resume) the demo into ``out_dir``; returns the metrics written to ``metrics.json``."""
    sz = DemoSize.named(size)
    if not defences or any(d not in ABLATING for d in defences) or len(set(defences)) < len(defences):
        raise ConfigError(f"defences must be distinct training methods that rebuild refusal against ablation, one "
                          f"or more of {ABLATING}; got {defences}")
    out = Path(out_dir)
    runner = StageRunner(out)
    dev = ["--device", device] if device else []
    common = {"model": model, "size": asdict(sz)}

    runner.run("baseline", lambda d: _eval(d, model, sz, dev, attacks="none", extra=[]), config=common)
    runner.run("aligned", lambda d: _train(d, model, "refusal", sz, dev, []), config=_train_key(common, "refusal"))
    aligned = str(out / "aligned" / "model")
    runner.run("direction", lambda d: _directions(d, aligned, sz, dev), config=common, after=["aligned"])
    direction = str(out / "direction")
    answers, source = _prefill_answers(out / "baseline" / "completions.jsonl")
    runner.run("attack-aligned", lambda d: _eval(d, aligned, sz, dev, attacks=_battery(sz, defended=False, source=source),
                                                 extra=["--direction", direction, "--reference", model, *answers]),
               config=common, after=["direction"])
    for method in defences:
        # both defences start from the aligned model's own answers: generated once, then reused
        runner.run(method, lambda d, m=method: _train(d, aligned, m, sz, dev, [
            "--direction", direction, "--generations", str(out / "aligned-generations.jsonl")]),
                   config=_train_key(common, method), after=["direction"])
        runner.run(f"attack-{method}", lambda d, m=method: _eval(
            d, str(out / m / "model"), sz, dev, attacks=_battery(sz, defended=True, source=source),
            extra=["--direction", direction, "--reference", aligned, *answers]), config=common, after=[method])
    from drtk.pipeline.report import write_report

    return runner.run("report", lambda d: write_report(out, model=model, size=sz, defences=defences,
                                                       timings=dict(runner.timings)),
                      config=common, after=[f"attack-{m}" for m in defences] + ["attack-aligned", "baseline"])


def _prefill_answers(completions: Path) -> tuple[list[str], str]:
    """Prefill every model with the shipped model's own harmful answers (stage ``baseline``), so aligned and
    defended models get the same harmful text; a model that refused everything as shipped leaves the
    attacked model's own answers under ablation."""
    from drtk.data import load_answers
    from drtk.errors import DataError

    try:
        load_answers(completions)
    except DataError as err:
        logger.warning("prefills from each model's own answers under ablation: %s", err)
        return [], "ablation"
    return ["--answers", str(completions)], "answers"


def _train(folder: Path, model: str, method: str, sz: DemoSize, dev: list[str], extra: list[str]) -> dict:
    aligning = method == "refusal"
    steps = sz.aligned_steps if aligning else sz.train_steps
    n_borderline = (sz.aligned_borderline or sz.n_borderline) if aligning else sz.n_borderline
    args = ["train", "--model", model, "--method", method, "--steps", str(steps), "--n-harmful",
            str(sz.n_harmful), "--n-harmless", str(sz.n_harmless), "--n-borderline", str(n_borderline),
            "--out", str(folder), *dev, *extra, *_recipe(method), *resume_flag(folder)]
    _cli(args)
    # The stage is done once its model is written; its checkpoint (weights and optimizer state, about 2 GB
    # for full fine-tuning of the embedded model) only served a resume of this stage.
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    return {"model": str(folder / "model")}


def _directions(folder: Path, model: str, sz: DemoSize, dev: list[str]) -> dict:
    _cli(["directions", "--model", model, "--out", str(folder), "--n-fit", str(sz.n_fit), "--n-val", str(sz.n_val),
          "--top-k", str(sz.top_k), *dev])
    return json.loads((folder / "summary.json").read_text())


def _eval(folder: Path, model: str, sz: DemoSize, dev: list[str], *, attacks: str, extra: list[str]) -> dict:
    fit, val, top_k = sz.attack_fit
    _cli(["eval", "--model", model, "--attacks", attacks, "--limit", str(sz.eval_limit), "--max-new-tokens",
          str(sz.max_new_tokens), "--fit-prompts", str(fit), "--val-prompts", str(val), "--fresh-top-k", str(top_k),
          "--generations", str(folder.parent / "eval-generations.jsonl"), "--out", str(folder), *dev, *extra,
          *resume_flag(folder)], static_figures=False)  # the report draws its own attack figures
    return {"results": str(folder / "results.json")}
