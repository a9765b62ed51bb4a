"""`TrainConfig`: everything a training run is, as typed data saved next to the run.

The three methods differ only here: ``refusal`` (ordinary refusal training, the surface-alignment
baseline), ``recovery`` (plus recovery examples, Qi et al.), ``deeprefusal`` (plus recovery examples and
probabilistic ablation of the refusal direction, Xie et al.). :meth:`TrainConfig.for_method` fills in the
method's defaults; any field can still be overridden.
"""

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from drtk.errors import ConfigError, check_fields
from drtk.schedules import AblationSchedule
from drtk.training.data import DataConfig

Method = Literal["refusal", "recovery", "deeprefusal", "adaptive"]
METHODS: tuple[str, ...] = get_args(Method)
#: Methods that ablate the refusal direction during training.
ABLATING: tuple[str, ...] = ("deeprefusal", "adaptive")


def default_latent_layers(n_layers: int) -> tuple[int, ...]:
    """The layers a latent adversary perturbs when ``latent_adversary_layers`` is empty: 7/12 and 3/4 of the depth.

    On the embedded 30-layer model these are layers 17 and 22, where the fresh-direction attacker reads the
    refusal direction of the defended model; there the adversary held fresh directions better over four seeds
    than at n/3, n/2, 2n/3, and per-layer directions a little worse (docs/adaptive-defense.md, "The latent
    adversary at the attacker's layers").

    Example:
        >>> default_latent_layers(30), default_latent_layers(3)
        ((17, 22), (1, 2))
    """
    return tuple(sorted({7 * n_layers // 12, 3 * n_layers // 4}))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A training run.

    Attributes:
        method: ``refusal``, ``recovery``, ``deeprefusal`` or ``adaptive`` (a label checked against the
            fields below). ``adaptive`` is DeepRefusal against an adaptive attacker: the direction is
            re-extracted from the model being trained, per-layer directions are mixed in, part of the
            steps ablate everywhere, and recovery prefixes vary in length; it trains all weights for 120
            steps at 3e-5 with equal group weights (see :meth:`for_method`).
        steps: optimizer steps.
        batch_size: examples per optimizer step, over all processes and accumulation steps.
        micro_batch_size: examples per forward pass per process (None: ``batch_size / processes``);
            gradient accumulation makes up the rest.
        lr: peak learning rate (None: 2e-4 with LoRA, 2e-5 for full fine-tuning).
        lr_schedule: after warm-up: ``constant``, ``linear`` (to 0 at ``steps``) or ``cosine``.
        warmup_steps: linear learning-rate warm-up.
        weight_decay, adam_betas: AdamW.
        fused_adamw: AdamW as one fused kernel per step (``torch.optim.AdamW(fused=True)``) instead of PyTorch's
            default multi-tensor one. For full fine-tuning on the CPU the optimizer step is most of the time
            outside the forward and backward passes, and the fused step takes a fraction of it
            (``benchmarks/bench_training.py``); the weights agree with the default's up to rounding, not to
            the last bit, so it is off by default and a run repeats to the last bit on one machine.
        max_grad_norm: gradient clipping (None: off).
        lora: LoRA adapters (peft) instead of full fine-tuning.
        lora_r, lora_alpha, lora_dropout: LoRA shape (paper: r = alpha = 16).
        lora_targets: ``"all-linear"`` (every linear layer of the decoder) or leaf names (``q_proj``...).
        train_from_layer: train only blocks ``train_from_layer`` and up (and the final norm); the embedding
            and lower blocks stay frozen (None: every block). The refusal decision must then be read off
            the representation the model already has at that depth, instead of being rebuilt from
            surface cues in the lower layers.
        loss_reduction: per-sample loss: ``sum`` over its response tokens (the paper) or ``mean``.
        benign_weight, harmful_weight: the group weights (paper 0.8 / 0.2); each group's per-sample
            losses are averaged over the group's examples in the step's whole batch.
        decision_tokens, decision_weight: the first ``decision_tokens`` learned tokens of every response
            (where a model decides to refuse or to answer; after the harmful prefix in a recovery example)
            weigh ``decision_weight`` times the others in the loss (0 tokens or weight 1: off).
        refusal_contrast: weight of an unlikelihood term on every benign example: at the first token where
            its answer and a refusal of the training set part, ``-log(1 - p(refusal token))`` is added to
            its loss (0: off). Cross-entropy on a helpful answer raises that answer's opening; this lowers
            the refusal's opening itself, so both sides of the refuse-or-answer decision get a loss.
        refusal_contrast_depth: with ``refusal_contrast``, the same unlikelihood also for the opening token
            of every refusal of the training set (a recovery example's joiner included) at each of the
            first N tokens of every benign answer, where the answer itself goes on differently (0: only
            the first departure). Recovery training teaches a model to break off after a harmful prefix;
            this teaches it not to break off a helpful answer the same way.
        transition_weight: weight of a transition term on every recovery example (0: off; needs recovery data):
            the mean over the columns inside its harmful prefix (after the first token) of
            ``-log p(refusal opener)``, the refusal's first non-blank token: cross-entropy after the cut
            teaches turning to the refusal at the one depth where the prefix was cut; this at every depth of
            the harmful text read so far (the reinforced transition optimization of Yuan et al. 2024).
        retain_weight: weight of a representation-retention term on every benign example (0: off): the
            residual stream after the blocks ``retain_layers``, over all of the example's tokens, is held to
            the starting model's on the same example (mean over tokens and layers of the squared distance,
            relative to the starting activation's squared norm). Output cross-entropy teaches the training
            prompts' answers; this keeps the *representation* of benign inputs where it was, meant to keep
            prompts near them answered too (the retain loss of representation-rerouting defences; measured in
            ``docs/adaptive-defense.md``). The starting model's activations are computed once,
            before the first step, and kept in host memory (distinct benign examples x tokens x layers x
            d_model floats), a micro-batch's share moved to the device at each step.
        retain_layers: the blocks whose output ``retain_weight`` holds (None: four spread over the model,
            ``n/4, n/2, 3n/4`` and the last).
        retain_projection: weight of a one-sided hold on the refusal direction itself (0: off): on every benign
            example, ``relu((h - h_start) . r / g)^2`` averaged over its tokens, where ``h`` is the input of the
            direction's layer, ``r`` the starting direction (unit) and ``g`` its length (a difference in means:
            the harmful-harmless gap), so a benign prompt's projection may fall but not rise above the starting
            model's. Defences trained to refuse with the direction ablated raise it on benign prompts, and the
            rise tracks their over-refusal.
        benign_induce: the share of benign rows (0: off) that, in each forward pass, get the refusal direction
            *added* at the direction's layer over their tokens (``benign_induce_region``; activation addition, the edit that makes an
            aligned model refuse a harmless prompt) while still being trained on their helpful answer; those
            rows are not ablated in that pass. Ablation teaches a defence to refuse harmful prompts without
            the direction; this teaches it to answer benign ones with it, so the refuse-or-answer decision
            must rest on what the prompt asks rather than on the direction's value, where benign prompts
            that the starting model already represents near the harmful side (its near-misses) sit.
            Ablating methods only; the direction must come with its layer (a drtk Direction).
        benign_induce_region: where on those rows: ``all`` tokens, or the ``prompt`` only (up to and including
            the chat template's post-instruction tokens, where the refuse-or-answer decision is read), leaving
            the response as it is -- where recovery examples must still read a harmful turn.
        benign_induce_coeff: the added vector is this times the starting direction's length (a difference in
            means: the harmful-harmless gap), along the current direction.
        schedule: the ablation schedule (``deeprefusal`` only).
        direction_refresh_every: re-extract the direction on the training model every N steps (EMA with
            ``direction_ema``); None keeps the direction fixed (the paper: refresh was unstable).
        direction_ema: weight of the old direction in the refresh.
        direction_per_layer_fraction: with a refresh, the share of steps that ablate each layer's own
            freshly extracted direction instead of the single one (what a per-layer attacker does).
        direction_refresh_positions: with a refresh, more post-instruction positions (negative offsets from
            the prompt's end, e.g. ``(-5,)``) whose directions are re-extracted too.
        direction_refresh_layers: with a refresh of a single direction, more layers to read it at (at its
            own position and each of ``direction_refresh_positions``). With either, each step ablates the
            refreshed direction together with one of those others, drawn at random (on per-layer steps each
            layer's own directions at its position and a drawn one): a fresh-direction attacker selects the
            layer and position whose direction breaks the model.
        direction_select_every: with a refresh, every N steps select a direction on the training model the way
            the fresh-direction attacker does (the lowest first-token refusal score under ablation among the
            best-separating candidates over every post-instruction position and eligible layer), and ablate
            it beside the refreshed direction until the next selection (drawn among the others when
            ``direction_refresh_positions`` or ``direction_refresh_layers`` are set too). None: off.
        delta_scale: path robustness against weight-delta interpolation (an attacker blending the trained
            weights back toward the starting ones, ``start + lam (W - start)``): on a share
            ``delta_scale_fraction`` of the steps, the forward and backward pass run at such a blend with
            ``lam`` drawn uniformly from this ``(low, high)`` range (LoRA: the adapters' B matrices scaled,
            whose start is zero), so the trained behaviour must hold part of the way back too. None: off.
            Full fine-tuning keeps a copy of the starting trainable weights.
        delta_scale_fraction: the share of steps that run at a blend (with ``delta_scale``).
        latent_adversary: latent adversarial training (0: off; Casper et al. 2024, Sheshadri et al. 2024): on a
            share ``latent_adversary_fraction`` of the steps, a perturbation of the residual stream at one layer
            (drawn from ``latent_adversary_layers``), over every real token of the rows it applies to, is found by
            ``latent_adversary_steps`` steps of projected gradient ascent on the training loss, and the step then
            trains under it. Each token's perturbation has an L2 norm of at most this value times the median
            norm of the clean residual stream there (over the micro-batch's real tokens). A refusal-direction
            attacker is one such perturbation, chosen in advance; this one is chosen against the model as it
            is at that step, at whatever direction its refusal is weakest.
        latent_adversary_layers: the layers (residual stream input) it may perturb; each adversarial step draws
            one (empty: ``default_latent_layers``, two in the upper half of the model).
        latent_adversary_steps: gradient-ascent steps per micro-batch (each one forward and backward pass).
        latent_adversary_fraction: the share of steps that train under a perturbation.
        latent_adversary_rows: ``all`` rows (a harmful row's perturbation pushes away from its refusal, a benign
            row's away from its answer, toward refusing) or ``harmful`` rows only.
        padding_side: ``left``, ``right`` or ``auto`` (masks and losses are right either way). ``auto`` is
            left, except under bf16 autocast: TransformerBridge casts the float32 attention mask to bf16,
            where its large negative value becomes ``-inf``, so a left-padded row's leading pad queries see
            no key and turn to NaN; ``auto`` pads right there, and an explicit ``left`` is refused.
        mixed_precision: ``auto`` (bf16 autocast on CUDA, none on CPU), ``bf16`` or ``no``.
        seed: data order and mask sampling.
        checkpoint_every: steps between checkpoints (None: only at the end).
        progress: show a tqdm bar.
        data: how training examples are built (saved with the run).
    """

    method: str = "refusal"
    steps: int = 100
    batch_size: int = 8
    micro_batch_size: "int | None" = None
    lr: "float | None" = None
    lr_schedule: str = "constant"
    warmup_steps: int = 5
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    fused_adamw: bool = False
    max_grad_norm: "float | None" = 1.0
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: "str | tuple[str, ...]" = "all-linear"
    train_from_layer: "int | None" = None
    loss_reduction: str = "sum"
    benign_weight: float = 0.8
    harmful_weight: float = 0.2
    decision_tokens: int = 0
    decision_weight: float = 1.0
    refusal_contrast: float = 0.0
    refusal_contrast_depth: int = 0
    transition_weight: float = 0.0
    retain_weight: float = 0.0
    retain_layers: "tuple[int, ...] | None" = None
    retain_projection: float = 0.0
    benign_induce: float = 0.0
    benign_induce_coeff: float = 1.0
    benign_induce_region: str = "all"
    schedule: "AblationSchedule | None" = None
    direction_refresh_every: "int | None" = None
    direction_ema: float = 0.9
    direction_per_layer_fraction: float = 0.0
    direction_refresh_positions: tuple[int, ...] = ()
    direction_refresh_layers: tuple[int, ...] = ()
    direction_select_every: "int | None" = None
    delta_scale: "tuple[float, float] | None" = None
    delta_scale_fraction: float = 0.5
    latent_adversary: float = 0.0
    latent_adversary_layers: tuple[int, ...] = ()
    latent_adversary_steps: int = 2
    latent_adversary_fraction: float = 0.5
    latent_adversary_rows: str = "all"
    padding_side: str = "auto"
    mixed_precision: str = "auto"
    seed: int = 0
    checkpoint_every: "int | None" = 50
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name} {msg}")

        if self.method not in METHODS:
            raise bad("method", f"must be one of {METHODS}, got {self.method!r}")
        for name in ("steps", "batch_size", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.micro_batch_size is not None and not 1 <= self.micro_batch_size <= self.batch_size:
            raise bad("micro_batch_size", f"must be in 1..batch_size ({self.batch_size}), got {self.micro_batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise bad("lr_schedule", f"must be constant, linear or cosine, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise bad("max_grad_norm", f"must be > 0 or None (no clipping), got {self.max_grad_norm}")
        if self.train_from_layer is not None and self.train_from_layer < 0:
            raise bad("train_from_layer", f"must be >= 0 or None (every block), got {self.train_from_layer}")
        if not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        if self.loss_reduction not in ("sum", "mean"):
            raise bad("loss_reduction", f"must be 'sum' (per-sample sum, the paper) or 'mean', got {self.loss_reduction!r}")
        if self.benign_weight < 0 or self.harmful_weight < 0 or self.benign_weight + self.harmful_weight == 0:
            raise bad("benign_weight", f"and harmful_weight must be >= 0 and not both 0, got "
                      f"{self.benign_weight} and {self.harmful_weight}")
        if self.decision_tokens < 0 or not self.decision_weight > 0:
            raise bad("decision_tokens", f"must be >= 0 and decision_weight > 0, got {self.decision_tokens} and "
                      f"{self.decision_weight}")
        if not self.refusal_contrast >= 0:
            raise bad("refusal_contrast", f"must be >= 0 (0: off), got {self.refusal_contrast}")
        if self.refusal_contrast_depth < 0:
            raise bad("refusal_contrast_depth", f"must be >= 0 (0: the first departure only), got {self.refusal_contrast_depth}")
        if self.refusal_contrast_depth and not self.refusal_contrast:
            raise bad("refusal_contrast_depth", "needs refusal_contrast > 0 (it weighs the same unlikelihood term)")
        if not self.transition_weight >= 0:
            raise bad("transition_weight", f"must be >= 0 (0: off), got {self.transition_weight}")
        if self.transition_weight and not self.data.recovery:
            raise bad("transition_weight", "needs recovery examples (DataConfig.recovery): it is taken inside their harmful prefixes")
        for name in ("retain_weight", "retain_projection"):
            if not getattr(self, name) >= 0:
                raise bad(name, f"must be >= 0 (0: off), got {getattr(self, name)}")
        if self.retain_layers is not None and (not self.retain_layers or min(self.retain_layers) < 0):
            raise bad("retain_layers", f"must be block indices >= 0 or None (four spread layers), got {self.retain_layers}")
        if not 0 <= self.benign_induce <= 1:
            raise bad("benign_induce", f"must be in [0, 1] (0: off), got {self.benign_induce}")
        if self.benign_induce and self.method not in ABLATING:
            raise bad("benign_induce", f"needs a direction: method 'deeprefusal' or 'adaptive', got {self.method!r}")
        if self.benign_induce_region not in ("all", "prompt"):
            raise bad("benign_induce_region", f"must be 'all' or 'prompt', got {self.benign_induce_region!r}")
        if not self.benign_induce_coeff > 0:
            raise bad("benign_induce_coeff", f"must be > 0, got {self.benign_induce_coeff}")
        if self.method in ABLATING and self.schedule is None:
            raise bad("schedule", f"is required for method={self.method!r} (e.g. AblationSchedule.paper(0.5))")
        if self.method not in ABLATING and self.schedule is not None:
            raise bad("schedule", f"is set but method={self.method!r} does not ablate; use method='deeprefusal'")
        if self.method == "refusal" and self.data.recovery:
            raise bad("data", "has recovery=True but method='refusal'; use method='recovery' or 'deeprefusal'")
        if self.direction_refresh_every is not None:
            if self.method not in ABLATING:
                raise bad("direction_refresh_every", f"needs method='deeprefusal' or 'adaptive', got {self.method!r}")
            if self.direction_refresh_every < 1:
                raise bad("direction_refresh_every", f"must be >= 1 or None, got {self.direction_refresh_every}")
        if not 0 <= self.direction_per_layer_fraction <= 1:
            raise bad("direction_per_layer_fraction", f"must be in [0, 1], got {self.direction_per_layer_fraction}")
        for name in ("direction_per_layer_fraction", "direction_refresh_positions", "direction_refresh_layers",
                     "direction_select_every"):
            if getattr(self, name) and self.direction_refresh_every is None:
                raise bad(name, "needs direction_refresh_every (those directions are re-extracted)")
        if any(not isinstance(q, int) or q >= 0 for q in self.direction_refresh_positions):
            raise bad("direction_refresh_positions",
                      f"must be negative offsets from the prompt's end (-1: last token), got {self.direction_refresh_positions}")
        if any(not isinstance(q, int) or q < 0 for q in self.direction_refresh_layers):
            raise bad("direction_refresh_layers", f"must be layer indices >= 0, got {self.direction_refresh_layers}")
        if self.direction_select_every is not None and self.direction_select_every < 1:
            raise bad("direction_select_every", f"must be >= 1 or None, got {self.direction_select_every}")
        if not 0 <= self.direction_ema < 1:
            raise bad("direction_ema", f"must be in [0, 1), got {self.direction_ema}")
        if self.delta_scale is not None:
            lo, hi = self.delta_scale
            if not 0 < lo <= hi <= 1:
                raise bad("delta_scale", f"must be (low, high) with 0 < low <= high <= 1, got {self.delta_scale}")
        if not 0 <= self.delta_scale_fraction <= 1:
            raise bad("delta_scale_fraction", f"must be in [0, 1], got {self.delta_scale_fraction}")
        if not self.latent_adversary >= 0:
            raise bad("latent_adversary", f"must be >= 0 (0: off), got {self.latent_adversary}")
        if any(not isinstance(x, int) or x < 0 for x in self.latent_adversary_layers):
            raise bad("latent_adversary_layers", f"must be layer indices >= 0, got {self.latent_adversary_layers}")
        if self.latent_adversary_steps < 1:
            raise bad("latent_adversary_steps", f"must be >= 1, got {self.latent_adversary_steps}")
        if not 0 <= self.latent_adversary_fraction <= 1:
            raise bad("latent_adversary_fraction", f"must be in [0, 1], got {self.latent_adversary_fraction}")
        if self.latent_adversary_rows not in ("all", "harmful"):
            raise bad("latent_adversary_rows", f"must be 'all' or 'harmful', got {self.latent_adversary_rows!r}")
        if self.padding_side not in ("auto", "left", "right"):
            raise bad("padding_side", f"must be auto, left or right, got {self.padding_side!r}")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise bad("mixed_precision", f"must be auto, bf16 or no, got {self.mixed_precision!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise bad("checkpoint_every", f"must be >= 1 or None, got {self.checkpoint_every}")

    @classmethod
    def for_method(cls, method: str, **overrides: Any) -> "TrainConfig":
        """The method's defaults (recovery data for every method but ``refusal``; the paper's schedule
        with p = 0.5 for ``deeprefusal``), then ``overrides``. A ``data`` override is taken as given, so
        ``data=DataConfig(recovery=False)`` turns recovery examples off (the paper's ablation)."""
        if method not in METHODS:
            raise ConfigError(f"TrainConfig.method must be one of {METHODS}, got {method!r}")
        data = overrides.pop("data", None)
        if data is None:
            data = DataConfig(recovery=method != "refusal")
        if method == "deeprefusal":
            overrides.setdefault("schedule", AblationSchedule.paper(0.5))
        if method == "adaptive":
            # The paper's probabilistic ablation on half the steps, full ablation (what an attacker does
            # at inference) on the other half, over every position; the direction tracks the model being
            # trained, with per-layer directions on half the steps; recovery prefixes from 5 to 40 tokens;
            # half the benign rows answer with half the direction's length added to their prompt tokens
            # (benign_induce: halfway toward the harmful prompts, where the starting model's near-misses sit);
            # a latent adversary on a quarter of the steps, on harmful rows only, where the attacker reads.
            overrides.setdefault("schedule", replace(AblationSchedule.paper(0.5), mode="gated", attack_fraction=0.5,
                                                     region="all"))
            overrides.setdefault("direction_refresh_every", 4)
            overrides.setdefault("direction_ema", 0.5)
            overrides.setdefault("direction_per_layer_fraction", 0.5)
            overrides.setdefault("benign_induce", 0.5)
            overrides.setdefault("benign_induce_coeff", 0.5)
            overrides.setdefault("benign_induce_region", "prompt")
            # Without it, 120 steps hold the transferred and fresh directions and per-layer directions break the
            # model into loops (49% over three seeds); with it, per-layer 3% at the same transfer, fresh and
            # over-refusal (docs/adaptive-defense.md, three seeds each). Its layers are the default's, 7n/12 and 3n/4:
            # over four seeds fresh directions 13% (3-17% per seed) against 21% (14-34%) at n/3, n/2, 2n/3.
            overrides.setdefault("latent_adversary", 0.03)
            overrides.setdefault("latent_adversary_fraction", 0.25)
            overrides.setdefault("latent_adversary_rows", "harmful")
            if data.recovery_tokens == DataConfig().recovery_tokens:
                data = replace(data, recovery_tokens=(5, 40))
            # The measured training (docs/adaptive-defense.md): 120 steps of full fine-tuning at 3e-5 with equal
            # group weights and every borderline example twice, so that the method name alone is the recipe.
            # The paper's 0.8 / 0.2 gave nearly all of the robustness back at 60 steps; 120 steps instead of 60
            # hold the transferred and fresh directions on the whole held-out split (three seeds each).
            overrides.setdefault("lora", False)
            overrides.setdefault("steps", 120)
            if not overrides["lora"]:
                overrides.setdefault("lr", 3e-5)
            overrides.setdefault("benign_weight", 0.5)
            overrides.setdefault("harmful_weight", 0.5)
            if data.borderline_repeat == DataConfig().borderline_repeat:
                data = replace(data, borderline_repeat=2)
        return cls(method=method, data=data, **overrides)

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora else 2e-5)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["schedule"] = self.schedule.to_dict() if self.schedule is not None else None
        d["data"] = self.data.to_dict()
        d["adam_betas"] = list(self.adam_betas)
        if self.delta_scale is not None:
            d["delta_scale"] = list(self.delta_scale)
        if isinstance(self.lora_targets, tuple):
            d["lora_targets"] = list(self.lora_targets)
        if self.retain_layers is not None:
            d["retain_layers"] = list(self.retain_layers)
        d["direction_refresh_positions"] = list(self.direction_refresh_positions)
        d["direction_refresh_layers"] = list(self.direction_refresh_layers)
        d["latent_adversary_layers"] = list(self.latent_adversary_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        check_fields(cls, d)
        d = dict(d)
        if d.get("schedule") is not None:
            d["schedule"] = AblationSchedule.from_dict(d["schedule"])
        if "data" in d:
            d["data"] = DataConfig.from_dict(d["data"])
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        if isinstance(d.get("lora_targets"), list):
            d["lora_targets"] = tuple(d["lora_targets"])
        for name in ("delta_scale", "retain_layers", "direction_refresh_positions", "direction_refresh_layers",
                     "latent_adversary_layers"):
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        return cls(**d)

