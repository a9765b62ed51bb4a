"""``drtk train``: refusal training, recovery training or DeepRefusal on a chat model.

Writes into ``--out``: ``config.json`` (the TrainConfig and run metadata), ``data.jsonl`` (the training
examples), ``history.csv``, ``model/`` (merged Hugging Face weights + tokenizer), ``adapter/`` (LoRA runs),
``direction.*`` (when it was found here), ``figures/`` and ``checkpoint/``.

Example:
    drtk train --model smollm2-135m-instruct --method refusal --full --steps 80 --out runs/refusal
    drtk train --model runs/refusal/model --method deeprefusal --p-site 0.5 --p-token 0.5 --out runs/dr
"""

import argparse
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

from drtk.commands.common import add_model_args, load_model_from_args, read_json, read_text, write_json
from drtk.errors import ConfigError, DataError
from drtk.training.config import ABLATING, METHODS

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="rebuild refusal: refusal / recovery / DeepRefusal training",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--method", choices=METHODS, default="refusal",
                   help="refusal (surface alignment), recovery (+ recovery examples), deeprefusal (+ probabilistic "
                        "ablation), adaptive (DeepRefusal against fresh and per-layer directions)")
    p.add_argument("--direction", type=Path, default=None,
                   help="a direction saved by `drtk directions` (deeprefusal; default: found here on the fit/val splits)")
    p.add_argument("--config", type=Path, default=None, help="a TrainConfig JSON file; flags given override it")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps ({_default('steps')})")
    p.add_argument("--batch-size", type=int, default=None, help=f"examples per step ({_default('batch_size')})")
    p.add_argument("--micro-batch-size", type=int, default=None)
    p.add_argument("--fused-adamw", action="store_true", default=None,
                   help="AdamW as one fused kernel per step: faster full fine-tuning, the same weights up to rounding")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate ({_default('resolved_lr')})")
    p.add_argument("--benign-weight", type=float, default=None,
                   help=f"loss weight of the benign group (paper 0.8; {_default('benign_weight')})")
    p.add_argument("--harmful-weight", type=float, default=None,
                   help=f"loss weight of the harmful group (paper 0.2; {_default('harmful_weight')})")
    p.add_argument("--loss-reduction", choices=("sum", "mean"), default=None,
                   help="per-sample loss: sum over its response tokens (the paper) or mean")
    p.add_argument("--decision-tokens", type=int, default=None,
                   help="the first N learned tokens of each response (where refusal is decided) weigh more")
    p.add_argument("--decision-weight", type=float, default=None, help="their loss weight (with --decision-tokens)")
    p.add_argument("--refusal-contrast", type=float, default=None,
                   help="weight of the unlikelihood of a refusal's opening on benign examples (0: off)")
    p.add_argument("--refusal-contrast-depth", type=int, default=None,
                   help="with --refusal-contrast: also a refusal's opening token at each of a benign answer's first N tokens")
    p.add_argument("--transition-weight", type=float, default=None,
                   help="weight of the refusal's opening as the next token at every depth of a recovery example's "
                        f"harmful prefix (0: only after the cut; {_default('transition_weight')})")
    p.add_argument("--delta-scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="path robustness: part of the steps run at the weights start + lam (W - start), lam ~ U(LOW, HIGH)")
    p.add_argument("--delta-scale-fraction", type=float, default=None,
                   help=f"the share of those steps ({_default('delta_scale_fraction')})")
    p.add_argument("--latent-adversary", type=float, default=None,
                   help="latent adversarial training: part of the steps train under a residual-stream perturbation found "
                        "by gradient ascent, each token's at most this times the median residual norm "
                        f"(0: off; {_default('latent_adversary')})")
    p.add_argument("--latent-layers", type=_layers, default=None,
                   help="layers it may perturb, one drawn per step, e.g. 17,22 (default 7/12 and 3/4 of the depth)")
    p.add_argument("--latent-steps", type=int, default=None,
                   help=f"ascent steps per micro-batch ({_default('latent_adversary_steps')})")
    p.add_argument("--latent-fraction", type=float, default=None,
                   help=f"the share of steps with it ({_default('latent_adversary_fraction')})")
    p.add_argument("--latent-rows", choices=("all", "harmful"), default=None,
                   help="perturb every row (benign ones toward refusing) or harmful rows only "
                        f"({_default('latent_adversary_rows')})")
    p.add_argument("--train-from-layer", type=int, default=None,
                   help="train only blocks L and up (the embedding and lower blocks stay frozen)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lora", dest="lora", action="store_true", default=None, help=f"LoRA adapters (lora: {_default('lora')})")
    mode.add_argument("--full", dest="lora", action="store_false", help="full fine-tuning")
    p.add_argument("--p-site", type=float, default=None,
                   help=f"per-site ablation probability (paper's Q; {_default('schedule.p_site')})")
    p.add_argument("--p-token", type=float, default=None,
                   help=f"per-token ablation probability (paper's M; {_default('schedule.p_token')})")
    p.add_argument("--region", choices=("response", "prompt", "all"), default=None,
                   help=f"tokens that may be ablated ({_default('schedule.region')})")
    p.add_argument("--region-lead", type=_lead, default=None,
                   help="with --region response: this many tokens before the response may be ablated too; 'post': "
                        "the chat template's post-instruction tokens, where refusal is decided (6 for SmolLM2)")
    p.add_argument("--clean-fraction", type=float, default=None,
                   help=f"share of rows trained without any ablation in each pass ({_default('schedule.clean_fraction')})")
    p.add_argument("--max-response-tokens", type=int, default=None,
                   help=f"answers are cut to this many tokens ({_default('data.max_response_tokens')})")
    for role, what in (("harmful", "to refuse"), ("harmless", "to keep answering"),
                       ("borderline", "safe but scary-sounding, to keep answering")):
        p.add_argument(f"--{role}", default=None, metavar="SET_OR_FILE",
                       help=f"{role} training prompts ({what}): a file (.txt, .csv, .json, .jsonl) or benchmark name, "
                            f"every prompt in it (default: drtk's {role} set, its train split, then its fit split)")
        p.add_argument(f"--n-{role}", type=int, default=None,
                       help=f"the first N {role} prompts (shipped set: the train split, then the fit split"
                            + ("; default both" if role == "borderline" else "") + ")")
    p.add_argument("--borderline-repeat", type=int, default=None,
                   help=f"each borderline-benign example appears this many times, against over-refusal "
                        f"({_default('data.borderline_repeat')})")
    p.add_argument("--hard-benign", type=float, default=None,
                   help="share of benign prompts, those projecting highest on the refusal direction, to oversample")
    p.add_argument("--hard-benign-repeat", type=int, default=None,
                   help=f"extra copies of each ({_default('data.hard_benign_repeat')})")
    p.add_argument("--max-repeated", type=float, default=None,
                   help="drop generated answers (and recovery prefixes) whose share of words inside a repeated word "
                        f"trigram exceeds this, e.g. 0.7 (looping letters; 1: keep all; {_default('data.max_repeated')})")
    p.add_argument("--no-recovery", dest="recovery", action="store_false", default=None,
                   help="no recovery examples (harmful prefix, then refusal): the paper's ablation without recovery data")
    p.add_argument("--recovery-tokens", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help=f"recovery prefixes of LOW to HIGH tokens (the paper 20 25; {_default('data.recovery_tokens')})")
    p.add_argument("--recovery-joiner", default=None,
                   help="text between a recovery example's harmful prefix and its refusal, \\n and \\t read as "
                        "newline and tab (default a paragraph break; '' starts the refusal right after the cut)")
    p.add_argument("--harmful-answers", type=Path, default=None,
                   help="harmful answers to the training prompts (jsonl/json/csv with a prompt and an answer column, "
                        "or a `drtk eval` completions.jsonl): recovery prefixes are cut from these instead of "
                        "generated; prompts without one get no recovery example")
    p.add_argument("--retain-weight", type=float, default=None,
                   help="hold benign examples' residual stream to the starting model's, with this weight "
                        f"({_default('retain_weight')})")
    p.add_argument("--retain-layers", type=_layers, default=None,
                   help="blocks whose output --retain-weight holds, e.g. 7,15,22,29 (default four spread layers)")
    p.add_argument("--retain-projection", type=float, default=None,
                   help="hold benign examples' projection on the starting direction to at most the starting model's, "
                        f"with this weight ({_default('retain_projection')})")
    p.add_argument("--benign-induce", type=float, default=None,
                   help="share of benign rows trained with the refusal direction added at its layer "
                        f"({_default('benign_induce')})")
    p.add_argument("--benign-induce-coeff", type=float, default=None,
                   help=f"the added vector in units of the direction's length ({_default('benign_induce_coeff')})")
    p.add_argument("--benign-induce-region", choices=("all", "prompt"), default=None,
                   help="add it over all tokens of those rows, or over the prompt only "
                        f"({_default('benign_induce_region')})")
    p.add_argument("--refresh-positions", type=_positions, default=None,
                   help="with a refreshed direction (adaptive): more post-instruction positions to read directions at, "
                        "as negative offsets: --refresh-positions=-5 or =-5,-3; each step ablates the refreshed direction "
                        "and one of the others, drawn (default: the direction's own position only)")
    p.add_argument("--refresh-layers", type=_layers, default=None,
                   help="with a refreshed direction: more layers to read it at, e.g. 15,17,19,21 (with --refresh-positions "
                        "at each position); drawn as above")
    p.add_argument("--select-every", type=int, default=None,
                   help="with a refreshed direction: every N steps select a direction on the model being trained as the "
                        "fresh-direction attacker does, and ablate it beside the refreshed one (default: off)")
    p.add_argument("--refusal-text", default=None,
                   help="one refusal for every harmful prompt (default: the model's own, else shipped ones)")
    p.add_argument("--data", type=Path, default=None,
                   help="training examples as JSON lines (fields of drtk.training.Example, e.g. a run's data.jsonl) "
                        "instead of generating them")
    p.add_argument("--generations", type=Path, default=None,
                   help="reuse the model's generations kept in this JSON-lines file and add new ones (runs from the "
                        "same model share them; entries are keyed by a checksum of the weights)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from drtk.schedules import AblationSchedule
    from drtk.training import TrainConfig

    saved = _saved_config(args.out, args.resume)
    d = None
    if args.config is not None:
        d = read_json(args.config, "--config")
        if not isinstance(d, dict):
            raise ConfigError(f"--config {args.config} must hold a JSON object of TrainConfig fields")
        d = d.get("train", d)
    if saved is not None and d is None:  # the run's own config; flags may extend it
        base = TrainConfig.from_dict(saved["train"])
    else:
        # adapters or full fine-tuning chosen first (flag, then file), so the method's rate for that kind applies
        lora = args.lora if args.lora is not None else (d or {}).get("lora")
        base = TrainConfig.for_method(args.method, **({} if lora is None else {"lora": lora}))
    if d is not None:
        base = TrainConfig.from_dict({**base.to_dict(), **d, "method": args.method})
    over: dict[str, Any] = {}
    for flag, fld in (("steps", "steps"), ("batch_size", "batch_size"), ("micro_batch_size", "micro_batch_size"),
                      ("lr", "lr"), ("lora", "lora"), ("seed", "seed"), ("fused_adamw", "fused_adamw"),
                      ("benign_weight", "benign_weight"), ("harmful_weight", "harmful_weight"),
                      ("loss_reduction", "loss_reduction"),
                      ("decision_tokens", "decision_tokens"), ("decision_weight", "decision_weight"),
                      ("refusal_contrast", "refusal_contrast"), ("refusal_contrast_depth", "refusal_contrast_depth"),
                      ("transition_weight", "transition_weight"),
                      ("delta_scale_fraction", "delta_scale_fraction"),
                      ("latent_adversary", "latent_adversary"), ("latent_layers", "latent_adversary_layers"),
                      ("latent_steps", "latent_adversary_steps"), ("latent_fraction", "latent_adversary_fraction"),
                      ("latent_rows", "latent_adversary_rows"),
                      ("retain_weight", "retain_weight"), ("retain_layers", "retain_layers"),
                      ("retain_projection", "retain_projection"),
                      ("benign_induce", "benign_induce"), ("benign_induce_coeff", "benign_induce_coeff"),
                      ("benign_induce_region", "benign_induce_region"),
                      ("train_from_layer", "train_from_layer"), ("refresh_positions", "direction_refresh_positions"),
                      ("refresh_layers", "direction_refresh_layers"), ("select_every", "direction_select_every")):
        if getattr(args, flag) is not None:
            over[fld] = getattr(args, flag)
    if args.delta_scale is not None:
        over["delta_scale"] = tuple(args.delta_scale)
    sched = {k: v for k, v in (("p_site", args.p_site), ("p_token", args.p_token), ("region", args.region),
                               ("region_lead", args.region_lead),
                               ("clean_fraction", args.clean_fraction)) if v is not None}
    if sched:
        if base.schedule is None:
            raise ConfigError("--p-site/--p-token/--region/--region-lead/--clean-fraction apply to --method deeprefusal or "
                              "adaptive only")
        mode = base.schedule.mode
        if mode == "paper" and (sched.get("p_site", base.schedule.p_site) != sched.get("p_token", base.schedule.p_token)
                                or sched.get("clean_fraction", 0.0) > 0):
            mode = "gated"  # separate knobs or clean rows asked for: leave the paper's exact mode
        over["schedule"] = AblationSchedule.from_dict({**base.schedule.to_dict(), **sched, "mode": mode})
    data = {k: v for k, v in (("max_response_tokens", args.max_response_tokens), ("recovery", args.recovery),
                              ("borderline_repeat", args.borderline_repeat),
                              ("refusal_text", args.refusal_text),
                              ("recovery_tokens", tuple(args.recovery_tokens) if args.recovery_tokens else None),
                              ("recovery_joiner", _unescape(args.recovery_joiner)),
                              ("hard_benign", args.hard_benign),
                              ("hard_benign_repeat", args.hard_benign_repeat),
                              ("max_repeated", args.max_repeated)) if v is not None}
    if data:
        over["data"] = replace(base.data, **data)
    return replace(base, **over) if over else base


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value)
    return str(value)


def _default(name: str) -> str:
    """``default V`` for a config field (``data.``/``schedule.`` for the nested ones), then each method whose
    default differs, e.g. ``default 0; adaptive 0.03``: read from :meth:`TrainConfig.for_method`, so the
    help cannot drift from the code. Methods without the field (no schedule) are left out."""
    from drtk.training import TrainConfig

    *parents, leaf = name.split(".")
    values: dict[str, str] = {}
    for method in METHODS:
        obj: Any = TrainConfig.for_method(method)
        for part in parents:
            obj = getattr(obj, part)
        if obj is not None:  # a method without the parent (``schedule``), not a field whose value is None
            values[method] = _shown(getattr(obj, leaf))
    common = max(values.values(), key=list(values.values()).count)
    rest = "; ".join(f"{m} {v}" for m, v in values.items() if v != common)
    return f"default {common}" + (f"; {rest}" if rest else "")


def _ints(example: str) -> Any:
    """An argparse type for comma-separated integers (``example`` shows the expected form in its error)."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}") from None

    return parse


_layers = _ints("block indices like 7,15,22")
_positions = _ints("negative offsets like -5,-3")


def _lead(text: str) -> "int | str":
    """``--region-lead``: a token count or ``post``."""
    if text == "post":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count or 'post', got {text!r}") from None


def _unescape(text: "str | None") -> "str | None":
    """``\\n`` and ``\\t`` typed on a command line as newline and tab."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")


def _harmful_answers(path: Path, prompts: "Sequence[str]") -> list[str]:
    """One answer per training prompt from ``path`` ("" where it has none, which gives no recovery example)."""
    from drtk.data import load_answers

    found = load_answers(path)
    answers = [found.get(p, "") for p in prompts]
    hits = sum(bool(a) for a in answers)
    if not hits:
        raise DataError(f"{path} answers none of the {len(prompts)} harmful training prompts ({len(found)} answers "
                        "to other prompts); answer the training split's prompts (e.g. `drtk eval --attacks none "
                        "--harmful PROMPTS` with a model that complies)")
    logger.info("recovery prefixes: %d of %d training prompts answered in %s", hits, len(prompts), path)
    return answers


def _training_prompts(spec: "str | None", role: str, n: "int | None") -> Any:
    """The ``role`` prompts to train on: the first ``n`` of a user's set or file (all of it by default), or
    of a shipped set's train split and then its fit split, so that its test split stays held out."""
    from drtk.data import load_prompts, standard_splits
    from drtk.data.loading import SHIPPED_PROMPT_SETS

    if n is not None and n < 0:
        raise ConfigError(f"--n-{role} must be >= 0, got {n}")
    if spec is None or spec in SHIPPED_PROMPT_SETS:
        split = standard_splits(spec or role, seed=0)
        return _take(split["train"], split["fit"], n, default_all=role == "borderline")
    ps = load_prompts(spec)  # an empty file or column is a DataError there
    return ps.head(n) if n is not None else ps


def _take(train: Any, fit: Any, n: "int | None", *, default_all: bool = False) -> Any:
    """The train split's first ``n`` prompts; past its end, prompts of the fit split spread evenly over it
    (the split keeps its category mix). ``n=None``: the train split, or both with ``default_all``."""
    from drtk.data import PromptSet

    if n is None:
        n = len(train) + len(fit) if default_all else len(train)
    if n <= len(train):
        return train.head(n)
    m = min(n - len(train), len(fit))
    extra = fit.subset(sorted({i * len(fit) // m for i in range(m)}))
    return PromptSet(name=f"{train.name}+fit", prompts=train.prompts + extra.prompts,
                     categories=train.categories + extra.categories, source=train.source)


def _refuse_to_restart(out: Path, resume: bool) -> None:
    """A run folder with a checkpoint is an interrupted (or finished) run: starting it over would overwrite the
    checkpoint at the first save, so that takes an explicit choice."""
    from drtk.training.loop import CHECKPOINT, has_checkpoint

    if resume or not has_checkpoint(out):
        return
    try:
        step = json.loads((out / CHECKPOINT / "trainer.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        step = "?"
    raise ConfigError(f"{out} already holds a training checkpoint (step {step}); pass --resume to go on from it, "
                      f"or another --out (delete {out / CHECKPOINT} to start this run over)")


def _training_rows(path: Path) -> tuple[Any, str]:
    """The training examples of a ``data.jsonl`` that ``drtk train`` wrote (``--data``, or a resumed run's own),
    and the text they were read from."""
    from drtk.training import Example, TrainingSet

    text = read_text(path, "--data")
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not rows:
            raise ValueError("it holds no examples")
        return TrainingSet(tuple(Example(**r) for r in rows)), text
    except (ValueError, TypeError) as err:
        raise DataError(f"--data {path} is not a drtk training set (the data.jsonl a `drtk train` run writes): {err}") \
            from err


def _saved_config(out: Path, resume: bool) -> "dict[str, Any] | None":
    """The ``config.json`` (``train``: the TrainConfig, ``run``: its inputs) of the run a ``--resume`` goes on with,
    if there is one."""
    saved = out / "config.json"
    if not resume or not saved.exists():
        return None
    doc = read_json(saved, "--resume")
    if not isinstance(doc, dict) or not {"train", "run"} <= set(doc):
        raise ConfigError(f"{saved} is not a drtk train config (no 'train' and 'run'); resume needs the run's own folder")
    return doc


def _same_inputs(out: Path, earlier: dict[str, Any], model_id: str, direction: "Path | None", splits: dict[str, Any],
                 *, from_file: bool) -> "Path | None":
    """Check that a resume goes on with the model, direction and prompts the run started with; returns the
    direction to use (the run's own when none is given)."""
    from drtk.models.loading import same_place

    changed = []
    if earlier.get("model") is not None and not same_place(earlier["model"], model_id):
        changed.append(f"the model ({model_id}; the run: {earlier['model']})")
    was = earlier.get("direction")
    given_earlier = was is not None and not was.startswith("found here")
    if direction is not None and given_earlier and not same_place(was, str(direction)):
        changed.append(f"the direction ({direction}; the run: {was})")
    for role, ps in splits.items():
        rec = earlier.get("data", {}).get(role)
        if not from_file and isinstance(rec, dict) and rec.get("sha256") not in (None, ps.sha256()):
            changed.append(f"the {role} prompts ({ps.source}; the run: {rec.get('source')})")
    if changed:
        raise ConfigError(f"{out} holds a run with other inputs: {'; '.join(changed)}. Resume it with the same "
                          "--model, --direction and prompt options, or give another --out")
    if direction is None and given_earlier:
        logger.info("resuming with the run's direction %s", was)
        return Path(was)
    return direction


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from drtk.data import standard_splits
    from drtk.directions import Direction, SelectionConfig, find_direction
    from drtk.training import (DirectionDrift, GenerationCache, Trainer, build_training_set,
                               save_adapter, save_merged, save_training_record)
    from drtk.viz import save_figure
    from drtk.viz.training import direction_drift, schedule_heatmap, schedule_over_steps, training_curves

    _refuse_to_restart(args.out, args.resume)
    cfg = _config(args)
    if args.harmful_answers is not None and not cfg.data.recovery:
        raise ConfigError(f"--harmful-answers gives recovery prefixes; --method {cfg.method} trains no recovery examples "
                          "(use recovery, deeprefusal or adaptive)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.dtype is None:  # full-precision master weights; bf16 autocast still runs the matmuls on CUDA
        args.dtype = "float32"
    # Training prompts: a user's sets whole, or the shipped sets' train splits and then their fit splits (the test
    # splits stay held out; borderline prompts fit no direction, so both their splits train by default). Direction
    # finding, refreshing and the drift probe read the shipped fit and val splits.
    splits = {role: _training_prompts(getattr(args, role), role, getattr(args, f"n_{role}"))
              for role in ("harmful", "harmless", "borderline")}
    harmful, harmless = (standard_splits(n, seed=0) for n in ("harmful", "harmless"))
    # read before the model loads, so a file that answers none of the training prompts, or a wrong direction
    # path, fails at once
    answers = _harmful_answers(args.harmful_answers, splits["harmful"].prompts) if args.harmful_answers else None
    given = Direction.load(args.direction) if args.direction is not None else None
    model = load_model_from_args(args)
    meta: dict[str, Any] = {"model": model.model_id, "method": cfg.method}
    saved = _saved_config(out, args.resume)
    earlier = saved["run"] if saved is not None else None
    if earlier is not None:
        args.direction = _same_inputs(out, earlier, model.model_id, args.direction, splits, from_file=args.data is not None)

    direction = None
    generate_prefixes = cfg.data.recovery and cfg.data.prefix_source == "ablated" and args.harmful_answers is None
    if cfg.method in ABLATING or generate_prefixes:
        if args.direction is not None:  # the one given, or on a resume without one the run's own
            direction = given if given is not None else Direction.load(args.direction)
            meta["direction"] = str(args.direction)
        elif (out / "direction.safetensors").exists() and args.resume:
            direction = Direction.load(out / "direction.safetensors")
        elif cfg.method in ABLATING:
            logger.info("finding the refusal direction on %s (fit/val splits)", model.model_id)
            direction = find_direction(model, harmful["fit"].head(64), harmless["fit"].head(64), harmful["val"],
                                       harmless["val"], config=SelectionConfig(top_k=8)).direction
            direction.save(out / "direction.safetensors")
            meta["direction"] = "found here: direction.safetensors"
        else:
            logger.info("no --direction: recovery prefixes come from the model as it is (prefix_source='plain')")
            cfg = replace(cfg, data=replace(cfg.data, prefix_source="plain"))
    if direction is not None:
        direction.check_model(model)

    data_path = out / "data.jsonl"
    source = args.data if args.data is not None else (data_path if args.resume and data_path.exists() else None)
    if source is not None:
        data, text = _training_rows(source)
        # a resumed run keeps the record of what its data was built from
        meta["data"] = earlier["data"] if earlier is not None and source == data_path else {"file": str(source)}
        if source != data_path:
            data_path.write_text(text)  # the examples trained on, read once
    else:
        meta["data"] = {k: {"n": len(v), "source": v.source, "sha256": v.sha256()} for k, v in splits.items()}
        cache = GenerationCache(args.generations) if args.generations is not None else None
        if answers is not None:
            meta["data"]["harmful_answers"] = str(args.harmful_answers)
        data = build_training_set(
            model, harmful=splits["harmful"].prompts, harmless=splits["harmless"].prompts,
            borderline=splits["borderline"].prompts, harmful_categories=splits["harmful"].categories, config=cfg.data,
            harmful_answers=answers,
            direction=direction.for_model(model) if direction is not None else None, cache=cache,
            direction_layer=direction.layer if direction is not None else None,
            direction_position=direction.position if direction is not None and direction.position is not None else -1,
        )
        if cache is not None:
            cache.save()
        data_path.write_text("".join(json.dumps(asdict(e)) + "\n" for e in data.examples))
    meta["examples"] = data.counts()

    probe_h, probe_b = harmful["val"].head(16).prompts, harmless["val"].head(16).prompts
    drift = DirectionDrift(probe_h, probe_b, every=max(1, cfg.steps // 10))
    refresh = (harmful["fit"].head(32).prompts, harmless["fit"].head(32).prompts)
    trainer = Trainer(model, data, cfg, direction=direction, callbacks=[drift], checkpoint_dir=out, refresh_prompts=refresh)
    cfg = trainer.config  # with the layers a default resolved to on this model
    write_json(out / "config.json", {"train": cfg.to_dict(), "run": meta})
    result = trainer.train(resume=args.resume)
    result.history.to_csv(out / "history.csv", index=False)
    if not trainer.accelerator.is_main_process:
        return 0
    drift.frame.to_csv(out / "drift.csv", index=False)
    if trainer.peft_model is not None:
        save_adapter(trainer.peft_model, out / "adapter", base=model.model_id)
    save_merged(model, out / "model")
    # the prompts the model learned from, for the contamination check of any later evaluation of it
    learned = data.prompts()
    if trainer.provider is not None and cfg.direction_refresh_every is not None:
        learned["refresh"] = [*refresh[0], *refresh[1]]
    for folder in (out / "model", out / "adapter") if trainer.peft_model is not None else (out / "model",):
        save_training_record(folder, base=model.model_id, method=cfg.method, prompts=learned)
    figs = out / "figures"
    save_figure(training_curves(result.history, title=f"Training: {cfg.method} ({out.name})",
                                loss_reduction=cfg.loss_reduction), figs, "training_curves")
    if not drift.frame.empty:
        save_figure(direction_drift(drift.frame), figs, "direction_drift")
    if cfg.schedule is not None:
        layer = direction.layer if direction is not None else None
        save_figure(schedule_heatmap(cfg.schedule, n_layers=model.n_layers, direction_layer=layer), figs, "schedule_heatmap")
        save_figure(schedule_over_steps(cfg.schedule, n_layers=model.n_layers, steps=cfg.steps, direction_layer=layer),
                    figs, "schedule_over_steps")
    last = result.history.iloc[-1] if len(result.history) else pd.Series(dtype=float)
    logger.info("trained %d steps; final loss %.4g; model in %s", result.steps_done, float(last.get("loss", float("nan"))),
                out / "model")
    return 0
