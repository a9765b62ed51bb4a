"""One training loop for refusal training, recovery training and DeepRefusal.

Per optimizer step:

1. the step's global batch is a pure function of ``(seed, step)`` (epoch permutations from a seeded
   generator), so resuming needs only the step number; each process takes its share and splits it into
   micro-batches (gradient accumulation);
2. for ``deeprefusal`` the :class:`~drtk.schedules.ScheduleSampler` draws the masks of each forward pass,
   and :func:`~drtk.interventions.ablation_hooks` projects the provider's direction out where they say,
   inside a :func:`~drtk.interventions.hook_scope` that spans the forward pass *and* ``backward()``;
3. the loss is ``benign_weight * mean_benign + harmful_weight * mean_harmful`` of per-sample losses
   (sum or mean over each sample's response tokens, plus optional contrast and retain terms), each group
   mean normalised by the group's count
   in the whole global batch -- so micro-batching and data parallelism give the gradient of the full
   batch exactly (DDP averages over processes; the loss is scaled by the process count to undo it);
4. clip, AdamW, LR schedule; metrics (loss, group losses, lr, realized ablation rate, grad norm, step
   time) go to a history; callbacks may add metrics; checkpoints are written every N steps.

A non-finite loss or gradient stops the run with :class:`~drtk.errors.TrainingError` before the
optimizer touches the weights; the last checkpoint stays as it was.
"""

import json
import logging
import math
import os
import re
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd
import torch
from torch import Tensor

from drtk._types import Site
from drtk.errors import ConfigError, TrainingError
from drtk.interventions import ablation_hooks, hook_scope, layer_bases, unit
from drtk.schedules import ScheduleSampler, region_and_depth
from drtk.training.config import ABLATING, TrainConfig, default_latent_layers
from drtk.training.data import (GROUPS, Encoded, TrainingSet, collate, contrast_overlap, encode_example, end_of_turn_ids,
                                 with_contrast, with_transitions)
from drtk.training.directions import DirectionProvider, FixedDirection, RefreshedDirection

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"


class Callback:
    """Hooks into the loop. ``on_step_end`` may return extra metrics for the step's history row."""

    def on_train_begin(self, trainer: "Trainer") -> None:
        return None

    def on_step_end(self, trainer: "Trainer", step: int, metrics: dict[str, Any]) -> "dict[str, Any] | None":
        return None


_BLOCK_INDEX = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def block_index(name: str) -> "int | None":
    """The decoder block a module or parameter name belongs to (``model.layers.12.mlp...`` → 12), or None
    for the embedding, final norm and head."""
    found = _BLOCK_INDEX.search(name)
    return int(found.group(1)) if found else None


def lora_target_names(hf: torch.nn.Module, targets: "str | Sequence[str]", from_layer: "int | None" = None) -> list[str]:
    """Full module names of the decoder's linear layers to adapt (in blocks ``from_layer`` and up).

    The bridge wraps every HF module in place (``q_proj._original_component`` is the real ``Linear``), so
    peft's name matching is given the full names of the wrapped ``Linear`` modules; ``targets`` are matched
    against their standard names' leaves (``q_proj``), and linear copies the bridge adds for fused
    projections (unused by the forward pass) are left out. The output head is never adapted.
    """
    from drtk.training.export import hf_module_names

    std = hf_module_names(hf)
    out = []
    for name, mod in hf.named_modules():
        if not isinstance(mod, torch.nn.Linear) or id(mod) not in std or "lm_head" in std[id(mod)]:
            continue
        block = block_index(name)
        if from_layer is not None and (block is None or block < from_layer):
            continue
        if targets == "all-linear" or std[id(mod)].split(".")[-1] in targets:
            out.append(name)
    if not out:
        raise ConfigError(f"TrainConfig.lora_targets={targets!r} (train_from_layer={from_layer}) matched no linear "
                          "layer of the model")
    return out


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return 1.0 - frac if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns: the metrics history (one row per step) and the config."""

    history: pd.DataFrame
    config: TrainConfig
    steps_done: int


class Trainer:
    """The loop. Build it, call :meth:`train`.

    Args:
        model: a :class:`~drtk.models.ChatModel`; trained in place (LoRA adapters are injected into it).
        dataset: the examples (both loss groups needed).
        config: a :class:`~drtk.training.TrainConfig`.
        direction: for ``deeprefusal``: a :class:`~drtk.directions.Direction`, a tensor, or a
            :class:`~drtk.training.DirectionProvider`.
        refresh_prompts: ``(harmful, harmless)`` probe prompts for ``direction_refresh_every``.
        callbacks: :class:`Callback` objects.
        checkpoint_dir: where checkpoints go (None: none are written).
        accelerator: an ``accelerate.Accelerator`` (default: a new one; under ``accelerate launch``
            it is data parallel).

    Example:
        >>> cfg = TrainConfig.for_method("deeprefusal", steps=100)                       # doctest: +SKIP
        >>> result = Trainer(model, data, cfg, direction=direction).train()             # doctest: +SKIP
        >>> result.history[["loss", "ablation_rate"]].plot()                            # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        dataset: TrainingSet,
        config: TrainConfig,
        *,
        direction: Any = None,
        refresh_prompts: "tuple[Sequence[str], Sequence[str]] | None" = None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: "str | Path | None" = None,
        accelerator: Any = None,
    ) -> None:
        from accelerate import Accelerator

        self.model, self.config, self.callbacks = model, config, list(callbacks)
        self.dataset = dataset.require_groups() if isinstance(dataset, TrainingSet) else dataset
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.accelerator = accelerator or Accelerator(cpu=model.device.type == "cpu")
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        per_proc, rem = divmod(config.batch_size, self.world)
        self.micro = config.micro_batch_size or per_proc
        if rem or per_proc % self.micro:
            raise ConfigError(
                f"TrainConfig.batch_size ({config.batch_size}) must split evenly over {self.world} process(es) "
                f"and micro_batch_size ({config.micro_batch_size}); pick batch_size = processes x micro x k"
            )
        if self.autocast and config.padding_side == "left":
            raise ConfigError("bf16 autocast with padding_side='left' gives NaN at the pad positions (the bridge's "
                              "attention mask overflows to -inf in bf16); use padding_side 'auto' or 'right', or "
                              "mixed_precision='no'")
        side = config.padding_side
        self.padding_side = ("right" if self.autocast else "left") if side == "auto" else side
        self.provider = self._provider(direction, refresh_prompts)
        self.sampler = None
        if config.schedule is not None:
            self.sampler = ScheduleSampler(
                config.schedule, n_layers=model.n_layers, seed=config.seed * 1009 + 17 + self.rank,
                direction_layer=self.provider.layer if self.provider else None, device=model.device,
                n_post=model.chat.n_post,
            )
        eot = end_of_turn_ids(model)
        self.encoded: list[Encoded] = [
            encode_example(model, ex, max_response_tokens=config.data.max_response_tokens, eot=eot)
            for ex in self.dataset.examples
        ]
        if config.refusal_contrast:
            tok = model.tokenizer
            refusals = [tok(r, add_special_tokens=False)["input_ids"]
                        for r in sorted({ex.response for ex in self.dataset.examples if ex.group == "harmful"})]
            benign = GROUPS.index("benign")
            self.encoded = [with_contrast(e, refusals, depth=config.refusal_contrast_depth) if e.group == benign else e
                            for e in self.encoded]
            self._warn_contrast_overlap(benign)
        if config.transition_weight:
            self.encoded = [with_transitions(e, model.tokenizer) for e in self.encoded]
        self.projection = self._projection_axis(direction)
        self.induce = self._induce_axis(direction)
        self.retain_layers, self._held = self._retain_layers()
        self.reference = self._reference_activations()
        self.peft_model = self._setup_params()
        self.params = [p for p in model.hf.parameters() if p.requires_grad]
        self._blend_start = self._delta_start()
        self.latent_layers = self._latent_layers()
        if config.latent_adversary and not config.latent_adversary_layers:  # the default's, recorded with the run
            self.config = config = replace(config, latent_adversary_layers=self.latent_layers)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.resolved_lr, betas=config.adam_betas,
                                           weight_decay=config.weight_decay, fused=config.fused_adamw or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(config))
        self.net = self.accelerator.prepare_model(model.hf) if self.world > 1 else model.hf
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self._perm_cache: dict[int, Tensor] = {}

    # -- setup -------------------------------------------------------------------------------------
    def _warn_contrast_overlap(self, benign: int) -> None:
        """Warn when benign answers write a token the refusal contrast lowers in benign answers."""
        n = sum(e.group == benign for e in self.encoded)
        depth = self.config.refusal_contrast_depth
        where = "where a benign answer departs from the refusal text" + (
            f" and along the first {depth} tokens of benign answers" if depth > 1 else "")
        for token, k in contrast_overlap(self.encoded).items():
            if k:
                logger.warning("refusal contrast: it lowers %r %s, and %d of the %d "
                               "benign answers write that token themselves; the model can learn to avoid it there "
                               "too (docs/training.md, 'What the refusal contrast costs'). A refusal text opening "
                               "with a token the benign answers do not use avoids this.",
                               self.model.tokenizer.decode([token]), where, k, n)

    def _provider(self, direction: Any, refresh: Any) -> "DirectionProvider | None":
        cfg = self.config
        if cfg.method not in ABLATING:
            return None
        if direction is None:
            raise ConfigError(f"method={cfg.method!r} needs a direction (a Direction, a tensor or a DirectionProvider)")
        if hasattr(direction, "current"):
            return direction
        layer, position = None, -1
        if hasattr(direction, "for_model"):  # a drtk Direction: check it fits this model
            layer, position = direction.layer, direction.position if direction.position is not None else -1
            direction = direction.for_model(self.model)
        from drtk.interventions import layer_bases

        layer_bases(direction, self.model.n_layers, self.model.d_model)  # shape check, raises on mismatch
        if cfg.direction_refresh_every is not None:
            if refresh is None:
                raise ConfigError("TrainConfig.direction_refresh_every needs refresh_prompts=(harmful, harmless)")
            outside = [x for x in cfg.direction_refresh_layers if x >= self.model.n_layers]
            if outside:
                raise ConfigError(f"TrainConfig.direction_refresh_layers {outside} outside the model's {self.model.n_layers} layers")
            return RefreshedDirection(direction, harmful=refresh[0], harmless=refresh[1],
                                      every=cfg.direction_refresh_every, ema=cfg.direction_ema, layer=layer,
                                      position=position, per_layer_fraction=cfg.direction_per_layer_fraction,
                                      seed=cfg.seed * 7919 + 3, positions=cfg.direction_refresh_positions,
                                      layers=cfg.direction_refresh_layers, select_every=cfg.direction_select_every)
        return FixedDirection(direction, layer)

    def _retain_layers(self) -> tuple[tuple[int, ...], list[int]]:
        """The blocks whose outputs the retain terms read (``retain_layers`` with ``retain_weight``, and the
        block feeding the direction's layer with ``retain_projection``), and the positions among them of
        those ``retain_weight`` holds."""
        cfg, n = self.config, self.model.n_layers
        held: tuple[int, ...] = ()
        if cfg.retain_weight:
            held = tuple(sorted(set(cfg.retain_layers or (n // 4, n // 2, 3 * n // 4, n - 1))))
        layers = set(held) | ({self.projection[0]} if self.projection is not None else set())
        for layer in layers:
            self.model.check_site(Site(layer, "resid_post"))
        layers = sorted(layers)
        return tuple(layers), [layers.index(layer) for layer in held]

    def _projection_axis(self, direction: Any) -> "tuple[int, Tensor, float] | None":
        """With ``retain_projection``: (the block whose output is the direction's layer input, the unit
        direction, the length ``g`` of ``direction`` as given -- a Direction's difference in means)."""
        if not self.config.retain_projection:
            return None
        if self.provider is None:
            raise ConfigError(f"TrainConfig.retain_projection needs a direction (method {self.config.method!r} ablates none)")
        start = self.provider.current()
        layer = self.provider.layer
        if start.ndim != 1 or layer is None or layer < 1:
            raise ConfigError("TrainConfig.retain_projection needs a single direction read at a known layer >= 1 (a drtk "
                              f"Direction), got shape {tuple(start.shape)} at layer {layer}")
        raw = getattr(direction, "vector", direction)  # a Direction or FixedDirection keeps its length
        return layer - 1, unit(start.float()).to(self.model.device), float(raw.float().norm())

    def _induce_axis(self, direction: Any) -> "tuple[int, float] | None":
        """With ``benign_induce``: (the direction's layer, the length of the vector added there)."""
        cfg = self.config
        if not cfg.benign_induce:
            return None
        layer = self.provider.layer if self.provider is not None else None
        if layer is None:
            raise ConfigError("TrainConfig.benign_induce needs a direction read at a known layer (a drtk Direction), "
                              "to add it where it was read; pass one, or set benign_induce=0")
        self.model.check_site(Site(layer, "resid_pre"))
        raw = self._at_layer(getattr(direction, "vector", direction), layer)
        return layer, cfg.benign_induce_coeff * float(raw.float().norm())

    def _at_layer(self, direction: Tensor, layer: int) -> Tensor:
        """The vector of a direction of any accepted shape that applies at ``layer`` (a subspace's first)."""
        return layer_bases(direction, self.model.n_layers, self.model.d_model)[layer, 0]

    def _induced_rows(self, batch: Any, step: int, chunk: int) -> Tensor:
        """The benign rows of this micro-batch that get the direction added: each with probability
        ``benign_induce``, drawn from (seed, step, micro-batch, process) alone, so a resumed run draws
        the same rows."""
        g = torch.Generator().manual_seed(((self.config.seed * 1_000_003 + step) * 1009 + chunk) * 31 + self.rank)
        draw = torch.rand(batch.group.shape[0], generator=g) < self.config.benign_induce
        return (batch.group.cpu() == GROUPS.index("benign")) & draw

    def _induce_hooks(self, direction: Tensor, rows: Tensor, batch: Any) -> list[tuple[str, Any]]:
        """Activation addition at the direction's layer over the real tokens of ``rows`` (all of them, or
        those before the response with ``benign_induce_region="prompt"``)."""
        layer, length = self.induce
        mask = batch.attention_mask
        add = unit(self._at_layer(direction, layer).float()).to(mask.device) * length
        region, _ = region_and_depth(mask, batch.response_start, self.config.benign_induce_region)
        weight = (rows.to(mask.device)[:, None] & region).float()[..., None]

        def hook(acts: Tensor, hook: Any) -> Tensor:
            return acts + (weight * add).to(acts.dtype)

        return [(Site(layer, "resid_pre").hook_name, hook)]

    def _capture_hooks(self, store: dict[int, Tensor]) -> list[tuple[str, Any]]:
        """Hooks that keep the output of each retained block in ``store`` (the activation is not edited)."""
        def make(layer: int) -> Any:
            def hook(acts: Tensor, hook: Any) -> Tensor:
                store[layer] = acts
                return acts

            return hook

        return [(Site(layer, "resid_post").hook_name, make(layer)) for layer in self.retain_layers]

    def _row(self, store: dict[int, Tensor], mask: Tensor, b: int) -> Tensor:
        """Row ``b``'s retained activations over its own tokens, ``(layers, tokens, d_model)`` in float32."""
        return torch.stack([store[layer][b, mask[b]] for layer in self.retain_layers]).float()

    @torch.no_grad()
    def _reference_activations(self) -> dict[tuple[int, ...], Tensor]:
        """The starting model's retained activations on every distinct benign example (before any step)."""
        if not self.retain_layers:
            return {}
        benign = GROUPS.index("benign")
        todo = list({e.ids: e for e in self.encoded if e.group == benign}.values())
        out: dict[tuple[int, ...], Tensor] = {}
        was_training = self.model.hf.training
        self.model.hf.eval()
        try:
            for i in range(0, len(todo), self.micro):
                items = todo[i : i + self.micro]
                batch = collate(items, pad_id=self.model.tokenizer.pad_token_id,
                                padding_side=self.padding_side).to(self.model.device)
                store: dict[int, Tensor] = {}
                with hook_scope(self.model, self._capture_hooks(store)), self._autocast(), self.model.plain() as hf:
                    hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, use_cache=False, logits_to_keep=1)
                for b, e in enumerate(items):
                    out[e.ids] = self._row(store, batch.attention_mask.bool(), b).cpu()  # host memory: grows with the data
        finally:
            self.model.hf.train(was_training)
        logger.info("retain: starting activations of %d benign examples at blocks %s", len(out), self.retain_layers)
        return out

    def _retain(self, batch: Any, store: dict[int, Tensor]) -> Tensor:
        """Per row (zeros for harmful rows), the two retain terms ``(rows, 2)``: the mean over the
        ``retain_layers`` and the row's tokens of ``|h - h_start|^2 / |h_start|^2``, and the mean over its
        tokens of ``relu((h - h_start) . r / g)^2`` at the direction's layer."""
        benign = GROUPS.index("benign")
        mask = batch.attention_mask.bool()
        out = [torch.zeros(2, device=mask.device)] * mask.shape[0]
        for b in (batch.group == benign).nonzero().flatten().tolist():
            ref = self.reference[tuple(batch.input_ids[b, mask[b]].tolist())].to(mask.device)
            diff = self._row(store, mask, b) - ref
            full = rise = diff.new_zeros(())
            if self._held:
                full = (diff[self._held].pow(2).sum(-1) / ref[self._held].pow(2).sum(-1).clamp(min=1e-6)).mean()
            if self.projection is not None:
                layer, axis, g = self.projection
                rise = (diff[self.retain_layers.index(layer)] @ axis / g).clamp(min=0).pow(2).mean()
            out[b] = torch.stack([full, rise])
        return torch.stack(out)

    def _setup_params(self) -> Any:
        cfg, hf = self.config, self.model.hf
        if cfg.train_from_layer is not None and cfg.train_from_layer >= self.model.n_layers:
            raise ConfigError(f"TrainConfig.train_from_layer={cfg.train_from_layer} is past the model's last block "
                              f"({self.model.n_layers - 1})")
        if not cfg.lora:
            dtype = next(hf.parameters()).dtype
            if dtype in (torch.float16, torch.bfloat16):
                logger.warning("full fine-tuning of %s weights: AdamW updates smaller than the weights' precision are "
                               "lost; load the model in float32 (mixed precision runs the forward in bf16)", dtype)
            hf.requires_grad_(cfg.train_from_layer is None)
            if cfg.train_from_layer is not None:
                for name, p in hf.named_parameters():
                    block = block_index(name)
                    # the final norm trains with the upper blocks; the (often tied) embedding stays frozen
                    p.requires_grad_(block >= cfg.train_from_layer if block is not None else ".norm." in name)
            from drtk.training.export import hf_module_names

            std = hf_module_names(hf)
            for mod in hf.modules():  # copies the bridge splits off fused weights (views of them, unused) stay out
                if id(mod) not in std:
                    for p in mod.parameters(recurse=False):
                        p.requires_grad_(False)
            return None
        from peft import LoraConfig, get_peft_model

        if hasattr(hf, "peft_config"):
            raise TrainingError("this model already carries LoRA adapters; load a fresh model to train again")
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=lora_target_names(hf, cfg.lora_targets, cfg.train_from_layer), bias="none")
        # peft injects the adapters into `hf` in place; the bridge keeps firing its hooks around them.
        # Its initialisation draws from the global RNG: shield that, then re-draw A from our own generator
        # (peft's kaiming-uniform bound, 1/sqrt(fan_in); B stays zero) so runs are reproducible.
        with torch.random.fork_rng(devices=[]):
            peft_model = get_peft_model(hf, lcfg)
        gen = torch.Generator().manual_seed(cfg.seed * 104729 + 3)
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if ".lora_A." in name:
                    bound = 1.0 / math.sqrt(p.shape[1])
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        return peft_model

    def _delta_start(self) -> "list[tuple[Tensor, Tensor | None]]":
        """With ``delta_scale``: each blended parameter and its starting value (None: zero, LoRA's B)."""
        if self.config.delta_scale is None:
            return []
        if self.peft_model is not None:
            return [(p, None) for n, p in self.model.hf.named_parameters() if p.requires_grad and ".lora_B." in n]
        return [(p, p.detach().clone()) for p in self.params]

    def delta_scale(self, step: int) -> float:
        """The blend factor of ``step`` (1.0: the trained weights as they are); a pure function of
        (seed, step), so a resumed run draws the same."""
        cfg = self.config
        if cfg.delta_scale is None:
            return 1.0
        on, u = self._step_draw(15485863, step)
        lo, hi = cfg.delta_scale
        return lo + (hi - lo) * u if on < cfg.delta_scale_fraction else 1.0

    def _step_draw(self, salt: int, step: int) -> tuple[float, float]:
        """Two uniform numbers for ``step`` of a per-step option (``salt`` tells the options apart): whether
        the step has it, and what it draws; a pure function of (seed, step), so a resumed run draws the same."""
        u = torch.rand(2, generator=torch.Generator().manual_seed(self.config.seed * salt + step * 2 + 1))
        return float(u[0]), float(u[1])

    @torch.no_grad()
    def _blend(self, lam: float) -> None:
        """Weights to ``start + lam (W - start)`` in place; ``1 / lam`` undoes it (to rounding)."""
        for p, start in self._blend_start:
            if start is None:
                p.mul_(lam)
            else:
                p.sub_(start).mul_(lam).add_(start)

    @contextmanager
    def _blended(self, lam: float) -> Iterator[None]:
        """Forward and backward passes inside run at the blend ``lam``; the trained weights come back
        on the way out, also on an error, and their gradients are ``lam`` times the blend's."""
        if lam == 1.0:
            yield
            return
        self._blend(lam)
        try:
            yield
        finally:
            self._blend(1.0 / lam)
        with torch.no_grad():
            for p, _ in self._blend_start:
                if p.grad is not None:
                    p.grad.mul_(lam)

    # -- latent adversary ----------------------------------------------------------------------------
    def _latent_layers(self) -> tuple[int, ...]:
        """The layers a latent adversary may perturb (``latent_adversary_layers``, else ``default_latent_layers``)."""
        cfg, n = self.config, self.model.n_layers
        if not cfg.latent_adversary:
            return ()
        layers = cfg.latent_adversary_layers or default_latent_layers(n)
        for layer in layers:
            self.model.check_site(Site(layer, "resid_pre"))
        return layers

    def latent_layer(self, step: int) -> "int | None":
        """The layer ``step`` perturbs, or None for a step without the latent adversary; a pure function of
        (seed, step), so a resumed run draws the same."""
        if not self.latent_layers:
            return None
        on, u = self._step_draw(32452843, step)
        if on >= self.config.latent_adversary_fraction:
            return None
        return self.latent_layers[min(int(u * len(self.latent_layers)), len(self.latent_layers) - 1)]

    def _latent_adversary(self, batch: Any, norm: Tensor, hooks: list[tuple[str, Any]],
                          layer: int) -> tuple[tuple[str, Any], Tensor]:
        """Projected gradient ascent on the micro-batch's loss over a perturbation of the residual stream
        entering ``layer`` (under the pass's other ``hooks``): each real token of the adversary's rows gets
        at most ``latent_adversary`` times the median clean norm there. Returns the hook that adds the
        found perturbation (fixed, no gradient of its own) and the micro-batch's clean loss. The ascent runs
        on the unwrapped model: its backward passes reach the perturbation only, never DDP's reducer."""
        cfg = self.config
        mask = batch.attention_mask.bool()
        if cfg.latent_adversary_rows == "harmful":
            mask = mask & (batch.group == GROUPS.index("harmful"))[:, None]
        cells = mask[..., None].float()
        delta = torch.zeros(*mask.shape, self.model.d_model, device=mask.device, requires_grad=True)
        radius: list[float] = []
        name = Site(layer, "resid_pre").hook_name

        def add(acts: Tensor, hook: Any) -> Tensor:
            if not radius:  # the first pass is clean (delta = 0): it sets the radius
                norms = acts.detach().float().norm(dim=-1)[batch.attention_mask.bool()]
                radius.append(cfg.latent_adversary * float(norms.median()))
            return acts + delta.to(acts.dtype)  # zero outside the adversary's rows and real tokens

        losses = []
        stride = 2.5 / cfg.latent_adversary_steps  # of the radius, per normalised ascent step
        for _ in range(cfg.latent_adversary_steps):
            with hook_scope(self.model, [*hooks, (name, add)]):
                loss, _, _ = self._micro_loss(batch, norm, net=self.model.hf)
                (grad,) = torch.autograd.grad(loss, delta)
            losses.append(loss.detach())
            with torch.no_grad():
                step = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                moved = delta + stride * radius[0] * step
                delta = moved * (radius[0] / moved.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0) * cells
            delta.requires_grad_(True)
        found = delta.detach()

        def hook(acts: Tensor, hook: Any) -> Tensor:
            return acts + found.to(acts.dtype)

        return (name, hook), losses[0]

    # -- data order --------------------------------------------------------------------------------
    def batch_indices(self, step: int) -> list[int]:
        """The global batch of ``step``: a pure function of (seed, step)."""
        n, B = len(self.encoded), self.config.batch_size
        out = []
        for pos in range(step * B, step * B + B):
            epoch, i = divmod(pos, n)
            if epoch not in self._perm_cache:
                g = torch.Generator().manual_seed(self.config.seed * 7919 + epoch)
                self._perm_cache = {epoch: torch.randperm(n, generator=g)}
            out.append(int(self._perm_cache[epoch][i]))
        return out

    # -- one step ----------------------------------------------------------------------------------
    @property
    def autocast(self) -> bool:
        """Whether forward passes run under bf16 autocast (CUDA, ``mixed_precision`` auto or bf16)."""
        return self.model.device.type == "cuda" and self.config.mixed_precision in ("auto", "bf16")

    def _autocast(self) -> Any:
        return torch.autocast(self.model.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext()

    def _micro_loss(self, batch: Any, norm: Tensor, net: Any = None) -> tuple[Tensor, Tensor, Tensor]:
        """The micro-batch's share of the step loss, (sum loss per group, count per group), and the summed
        retain terms of its benign rows (see :meth:`_retain`), through ``net`` (default the trained one)."""
        cfg = self.config
        # Unembed only from the column before the batch's first learned token: the vocabulary projection
        # is a fifth of a small model's step, and prompts (never learned) are most of the tokens.
        learned = (batch.labels != -100).any(0).nonzero()
        first = int(learned[0]) if len(learned) else 1
        transitions = batch.transition_col[batch.transition_col >= 0]  # inside prefixes, before the learned tokens
        if len(transitions):
            first = min(first, int(transitions.min()))
        first = max(first, 1)
        store: dict[int, Tensor] = {}
        capture = hook_scope(self.model, self._capture_hooks(store)) if self.retain_layers else nullcontext()
        with self._autocast(), capture, self.model.plain():  # `self.net` holds `hf`: it runs what `plain` put in
            logits = (self.net if net is None else net)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              position_ids=batch.position_ids, use_cache=False,
                              logits_to_keep=batch.labels.shape[1] - first + 1).logits
        labels = batch.labels[:, first:]
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, T-first)
        learned = labels != -100
        token_w = learned.float()
        if cfg.decision_tokens and cfg.decision_weight != 1:
            depth = learned.cumsum(1)  # 1 at each response's first learned token
            token_w = torch.where(learned & (depth <= cfg.decision_tokens), cfg.decision_weight, token_w)
        per_sample = (ce * token_w).sum(1)
        if cfg.loss_reduction == "mean":
            per_sample = per_sample / token_w.sum(1).clamp(min=1)
        if cfg.refusal_contrast:
            p = _target_logp(batch.contrast_col, batch.contrast_token, logits, first).exp()
            per_sample = per_sample + cfg.refusal_contrast * _row_sum(-torch.log1p(-p.clamp(max=1 - 1e-6)), batch.contrast_col)
        if cfg.transition_weight:
            nll = -_target_logp(batch.transition_col, batch.transition_token, logits, first)
            n = (batch.transition_col >= 0).sum(1).clamp(min=1)
            per_sample = per_sample + cfg.transition_weight * _row_sum(nll, batch.transition_col) / n
        retain = per_sample.new_zeros(2)
        if self.retain_layers:
            per_row = self._retain(batch, store)  # (rows, 2)
            per_sample = per_sample + per_row @ per_row.new_tensor([cfg.retain_weight, cfg.retain_projection])
            retain = per_row.detach().sum(0)
        weight = norm[batch.group]  # group weight / group count in the global batch
        loss = (per_sample * weight).sum() * self.world  # DDP averages over processes
        stats = torch.stack([
            torch.zeros(2, device=ce.device).index_add(0, batch.group, per_sample.detach()),
            torch.zeros(2, device=ce.device).index_add(0, batch.group, torch.ones_like(per_sample)),
        ])
        return loss, stats, retain

    def train_step(self) -> dict[str, Any]:
        cfg, acc, step = self.config, self.accelerator, self.step
        t0 = time.perf_counter()
        idx = self.batch_indices(step)
        groups = torch.tensor([self.encoded[i].group for i in idx])
        counts = torch.bincount(groups, minlength=len(GROUPS)).float()
        w = torch.tensor([cfg.benign_weight, cfg.harmful_weight])
        present = counts > 0
        norm = torch.where(present, w / counts.clamp(min=1), torch.zeros_like(w))
        norm = (norm / (w * present).sum()).to(self.model.device)  # weights of the present groups sum to 1
        share = len(idx) // self.world
        mine = idx[self.rank * share : (self.rank + 1) * share]
        chunks = [mine[i : i + self.micro] for i in range(0, len(mine), self.micro)]
        stats = torch.zeros(2, 2, device=self.model.device)
        # ablated cells, region cells, summed retain terms, induced rows, the loss without the latent adversary
        tally = torch.zeros(6, device=self.model.device)
        direction = self.provider.current() if self.provider else None
        lam = self.delta_scale(step)
        adversary = self.latent_layer(step)
        self.model.hf.train()
        with self._blended(lam):
            for j, chunk in enumerate(chunks):
                batch = collate([self.encoded[i] for i in chunk], pad_id=self.model.tokenizer.pad_token_id,
                                padding_side=self.padding_side).to(self.model.device)
                hooks = []
                induced = self._induced_rows(batch, step, j) if self.induce is not None else None
                if self.sampler is not None:
                    masks = self.sampler.sample(batch.attention_mask, batch.response_start)
                    if induced is not None:
                        masks.weights[:, induced.to(masks.weights.device)] = 0  # an induced row is not ablated
                    tally[:2] += torch.stack([masks.weights.sum(), masks.region.sum() * len(masks.sites)]).float()
                    hooks = ablation_hooks(self.model, direction, sites=masks.active_sites(), mask_fn=self.sampler.mask_fn)
                if induced is not None and induced.any():
                    hooks += self._induce_hooks(direction, induced, batch)
                    tally[4] += induced.sum()
                if adversary is not None:
                    perturb, clean = self._latent_adversary(batch, norm, hooks, adversary)
                    hooks = [*hooks, perturb]
                    tally[5] += clean
                sync = nullcontext() if (j == len(chunks) - 1 or self.world == 1) else acc.no_sync(self.net)
                with sync, hook_scope(self.model, hooks):  # hooks stay on through backward()
                    loss, s, retain = self._micro_loss(batch, norm)
                    acc.backward(loss)
                stats += s
                tally[2:4] += retain
        if self.world > 1:
            stats, tally = acc.reduce(stats, reduction="sum"), acc.reduce(tally, reduction="sum")
        group_mean = stats[0] / stats[1].clamp(min=1)
        total = float((norm.cpu() * stats[0].cpu()).sum())
        grad_norm = self._clip()
        if not math.isfinite(total) or not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            where = f"; the last good checkpoint is in {self.checkpoint_dir / CHECKPOINT}" if self._has_checkpoint() else ""
            raise TrainingError(
                f"non-finite loss ({total}) or gradient norm ({grad_norm}) at step {step}; the weights were not "
                f"updated{where}. Lower TrainConfig.lr, keep max_grad_norm set, or check the data."
            )
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.sampler is not None:
            self.sampler.advance()
        if self.provider is not None:
            self.provider.after_step(self.model, step)
        self.step += 1
        rate = float(tally[0] / tally[1]) if tally[1] > 0 else 0.0
        return {
            "step": step, "loss": total,
            "loss_benign": float(group_mean[0]) if stats[1, 0] > 0 else float("nan"),
            "loss_harmful": float(group_mean[1]) if stats[1, 1] > 0 else float("nan"),
            "lr": lr, "ablation_rate": rate, "grad_norm": grad_norm, "delta_scale": lam,
            **{name: float(tally[i] / stats[1, 0]) for i, name, on in ((2, "retain", cfg.retain_weight),
                                                                     (3, "retain_projection", cfg.retain_projection),
                                                                     (4, "benign_induced", cfg.benign_induce))
               if on and stats[1, 0] > 0},
            **({"latent_layer": adversary, "latent_clean_loss": float(tally[5]) / self.world}
               if adversary is not None else {}),
            **({"selected_layer": site[0], "selected_position": site[1]}  # where the attacker would ablate now
               if (site := getattr(self.provider, "selected_site", None)) is not None else {}),
            "step_time": time.perf_counter() - t0,
        }

    def _clip(self) -> float:
        if self.config.max_grad_norm is not None:
            return float(torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm))
        grads = [p.grad.detach().float().norm() for p in self.params if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    # -- the run -----------------------------------------------------------------------------------
    def train(self, *, resume: bool = False) -> TrainResult:
        """Run to ``config.steps`` (from the last checkpoint when ``resume``); returns the history."""
        if resume:
            self.load_checkpoint()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        bar = None
        if self.config.progress and self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.config.steps, initial=self.step, desc=f"train {self.config.method}")
        try:
            while self.step < self.config.steps:
                row = self.train_step()
                for cb in self.callbacks:
                    row.update(cb.on_step_end(self, row["step"], dict(row)) or {})
                self.rows.append(row)
                every = self.config.checkpoint_every
                if self.checkpoint_dir is not None and (
                    self.step == self.config.steps or (every is not None and self.step % every == 0)
                ):
                    self.save_checkpoint()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.3g}", rate=f"{row['ablation_rate']:.2f}")
        finally:
            if bar is not None:
                bar.close()
            self.model.hf.eval()
        return TrainResult(self.history, self.config, self.step)

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    # -- checkpoints -------------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.model.hf.named_parameters() if p.requires_grad}

    def _has_checkpoint(self) -> bool:
        return self.checkpoint_dir is not None and has_checkpoint(self.checkpoint_dir)

    def save_checkpoint(self) -> Path:
        """Write everything a resume needs to ``checkpoint_dir/checkpoint`` (atomically replaced)."""
        from safetensors.torch import save_file

        if self.checkpoint_dir is None:
            raise TrainingError("this Trainer has no checkpoint_dir; pass checkpoint_dir= to save checkpoints")
        final = self.checkpoint_dir / CHECKPOINT
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            tmp = self.checkpoint_dir / f".{CHECKPOINT}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                tmp.mkdir(parents=True)
                save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
                torch.save({
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "sampler": self.sampler.state_dict() if self.sampler else None,
                    "provider": self.provider.state_dict() if self.provider else None,
                }, tmp / "state.pt")
                (tmp / "trainer.json").write_text(json.dumps({
                    "step": self.step, "config": self.config.to_dict(), "model": self.model.fingerprint(),
                    "history": self.rows,
                }, default=float))
            except (OSError, RuntimeError) as err:  # a full disk surfaces as either, depending on the writer
                shutil.rmtree(tmp, ignore_errors=True)
                kept = "the previous checkpoint is kept" if final.exists() else "no earlier checkpoint exists"
                raise TrainingError(f"could not write the checkpoint of step {self.step} under {self.checkpoint_dir} "
                                    f"({err}); is the disk full? {kept}, so --resume continues from it") from err
            old = self.checkpoint_dir / f".{CHECKPOINT}.old"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self) -> None:
        """Restore weights, optimizer, LR schedule, sampler and direction state, step and history."""
        from safetensors.torch import load_file

        if not self._has_checkpoint():
            raise TrainingError(f"no checkpoint to resume from in {self.checkpoint_dir}; run without --resume")
        path = self.checkpoint_dir / CHECKPOINT  # type: ignore[operator]
        meta = json.loads((path / "trainer.json").read_text())
        saved = TrainConfig.from_dict(meta["config"]).to_dict()
        ours = self.config.to_dict()
        if ours["latent_adversary"] and not saved["latent_adversary_layers"]:
            # written before a run recorded the layers its default resolved to (then n/3, n/2, 2n/3)
            logger.warning("the checkpoint in %s does not record its latent adversary's layers; resuming at %s "
                           "(--latent-layers sets them)", path, ours["latent_adversary_layers"])
            saved["latent_adversary_layers"] = ours["latent_adversary_layers"]
        differ = [k for k in ours if k not in ("steps", "progress", "checkpoint_every") and ours[k] != saved[k]]
        if differ:
            raise TrainingError(
                f"the checkpoint in {path} was written with a different config ({', '.join(differ)} differ); "
                "resume with the run's config.json or start a new --out folder"
            )
        weights = load_file(str(path / "trainable.safetensors"))
        params = dict(self.model.hf.named_parameters())
        missing = [n for n in weights if n not in params]
        if missing or len(weights) != len(self.params):
            raise TrainingError(f"checkpoint weights do not match the model's trainable parameters ({missing[:3]})")
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t)
        state = torch.load(path / "state.pt", weights_only=True, map_location=self.model.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.sampler is not None:
            state["sampler"]["generator"] = state["sampler"]["generator"].cpu()
            self.sampler.load_state_dict(state["sampler"])
        if self.provider is not None:
            self.provider.load_state_dict(state["provider"])
        self.step = int(meta["step"])
        self.rows = list(meta["history"])
        logger.info("resumed from %s at step %d", path, self.step)


def has_checkpoint(folder: "str | Path") -> bool:
    """Whether a run folder holds a complete checkpoint (written atomically: its ``trainer.json`` is the mark)."""
    return (Path(folder) / CHECKPOINT / "trainer.json").exists()


def train(model: Any, dataset: TrainingSet, config: TrainConfig, **kwargs: Any) -> TrainResult:
    """``Trainer(model, dataset, config, **kwargs).train(resume=...)`` in one call."""
    resume = kwargs.pop("resume", False)
    return Trainer(model, dataset, config, **kwargs).train(resume=resume)


def _target_logp(cols: Tensor, tokens: Tensor, logits: Tensor, first: int) -> Tensor:
    """``log p(token)`` at each of a batch's (column, token) targets (cols >= 0), flattened in row order;
    ``logits[:, j]`` (column ``first - 1 + j``) predicts column ``first + j``."""
    rows, k = (cols >= 0).nonzero(as_tuple=True)
    if not len(rows):
        return logits.new_zeros(0, dtype=torch.float32)
    logp = logits[rows, cols[rows, k] - first].float().log_softmax(-1)
    return logp.gather(-1, tokens[rows, k, None]).squeeze(-1)


def _row_sum(values: Tensor, cols: Tensor) -> Tensor:
    """Per row, the sum of the flattened per-target ``values`` of :func:`_target_logp`."""
    rows, _ = (cols >= 0).nonzero(as_tuple=True)
    return torch.zeros(cols.shape[0], device=cols.device, dtype=torch.float32).index_add(0, rows, values)
