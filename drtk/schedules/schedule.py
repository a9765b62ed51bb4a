"""Ablation-probability schedules: with what probability is the refusal direction ablated, where and when.

DeepRefusal (Xie et al. 2025, Eq. 9) edits ``h_t <- h_t - Q * M_t * r r^T h_t`` at every ablation site
(block input, attention output, MLP output), with ``Q ~ Bernoulli(p)`` drawn once per site per forward
pass and ``M_t ~ Bernoulli(p)`` drawn per (site, token). The fraction of ablated (site, token) cells is
therefore ``p**2`` -- the authors' code hides that square (its default p = 0.05 ablates 0.25% of cells).
drtk keeps the two factors as separate knobs and lets each vary:

* ``p_site`` (the paper's Q) is scaled by a **step profile** (constant, linear warm-up/decay, cosine,
  step-wise) and a **layer profile** (uniform, a window, a Gaussian bump around the direction's layer, an
  explicit array of weights);
* ``p_token`` (the paper's M) is scaled by a **depth profile**: depth counts tokens from the start of each
  row's region (its response start for ``region="response"``), so e.g. the first response tokens, where
  surface alignment lives, can be ablated more often.

The expected ablation probability of a cell is ``p_site(step, layer) * p_token(depth)``. Everything here
is a pure function of the config; :mod:`drtk.schedules.sampling` draws the masks.

Example:
    >>> s = AblationSchedule.paper(0.5)
    >>> s.expected_rate(step=0, n_layers=30)
    0.25
"""

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor

from drtk._types import ABLATION_POINTS, POINTS
from drtk.errors import ConfigError, check_fields

StepProfile = Literal["constant", "linear", "cosine", "step"]
LayerProfile = Literal["uniform", "window", "bump", "array"]
DepthProfile = Literal["flat", "decay", "first", "array"]
Region = Literal["response", "prompt", "all"]
# Fields hold plain ``str`` (checked against these in ``__post_init__``) so that a wrong value raises a
# ConfigError naming the field, also under runtime type checking.
Mode = Literal["gated", "paper"]
GatePer = Literal["batch", "row"]


def _check_prob(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"AblationSchedule.{name} must be a probability in [0, 1], got {value!r}")


def _check_choice(name: str, value: Any, literal: Any) -> None:
    options = get_args(literal)
    if value not in options:
        raise ConfigError(f"AblationSchedule.{name} must be one of {options}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class AblationSchedule:
    """Where and how often training ablates the refusal direction.

    Attributes:
        p_site: probability that a site is ablated in a forward pass (the paper's Q), before profiles.
        p_token: probability that a token of the region is ablated at a gated site (the paper's M).
        mode: ``"gated"`` (the knobs above, any profiles) or ``"paper"`` (Xie et al. exactly: one p for
            both factors, constant over steps, uniform over layers, flat over depth).
        gate_per: draw the site gate once per forward pass (``"batch"``, the paper) or once per row.
        points: which ablation points of each layer take part (``resid_pre``, ``attn_out``, ``mlp_out``).
        region: tokens that may be ablated: ``"response"`` (the assistant turn, prefill included),
            ``"prompt"`` or ``"all"`` (every real token). Padding is never ablated.
        region_lead: with ``region="response"``, this many tokens before the response join the region (and
            its depth counts from the first of them): the chat template's post-instruction tokens (6 in
            SmolLM2's ChatML, ``ChatFormat.n_post``) are where the refusal decision is read and the first response
            token is predicted, which the paper's response-only region never ablates. ``"post"``: exactly
            those, counted from the model's chat template when training starts (:meth:`resolve_lead`).
        step_profile: scale of ``p_site`` over training steps: ``constant``; ``linear`` (warm-up from 0,
            then a straight line to ``final_scale`` at ``total_steps``); ``cosine`` (warm-up, then cosine
            to ``final_scale``); ``step`` (warm-up, then ``milestone_scales[i]`` from ``milestones[i]``).
        warmup_steps: steps of linear warm-up from 0 to 1 (all step profiles but ``constant``).
        total_steps: where ``linear``/``cosine`` reach ``final_scale`` (None: no decay after warm-up).
        final_scale: the scale reached at ``total_steps``.
        milestones, milestone_scales: for ``step``: increasing step numbers and the scale from each on.
        layer_profile: weight of ``p_site`` per layer: ``uniform``; ``window`` (1 on
            ``layer_window=(first, stop)``, 0 elsewhere); ``bump`` (Gaussian of ``bump_width`` layers
            around ``bump_center``, default the direction's layer); ``array`` (``layer_weights``).
        depth_profile: weight of ``p_token`` per token depth into the region: ``flat``; ``decay``
            (``depth_floor + (1 - depth_floor) * 0.5 ** (depth / depth_half_life)``); ``first`` (1 for
            the first ``depth_first`` tokens, ``depth_floor`` after); ``array`` (``depth_weights``, the
            last value repeating).
        attack_fraction: fraction of steps on which every site and every region token is ablated
            (an attacker in the loop); drawn per step from the sampler's generator.
        clean_fraction: share of rows left without any ablation in every forward pass (attack steps
            included), drawn per row. Without it a row is almost never seen clean (at the paper's
            p = 0.5, 45 of SmolLM2's 90 sites are ablated in each pass), while the model meets every
            benign prompt clean at inference; these rows train that case too.

    Raises:
        ConfigError: naming the field (and the other field it conflicts with) and the fix.
    """

    p_site: float = 0.5
    p_token: float = 0.5
    mode: str = "gated"
    gate_per: str = "batch"
    points: tuple[str, ...] = ABLATION_POINTS
    region: str = "response"
    region_lead: "int | str" = 0
    step_profile: str = "constant"
    warmup_steps: int = 0
    total_steps: "int | None" = None
    final_scale: float = 1.0
    milestones: tuple[int, ...] = ()
    milestone_scales: tuple[float, ...] = ()
    layer_profile: str = "uniform"
    layer_window: "tuple[int, int] | None" = None
    bump_center: "int | None" = None
    bump_width: float = 3.0
    layer_weights: tuple[float, ...] = ()
    depth_profile: str = "flat"
    depth_half_life: float = 8.0
    depth_first: int = 8
    depth_floor: float = 0.0
    depth_weights: tuple[float, ...] = ()
    attack_fraction: float = 0.0
    clean_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_site", "p_token", "final_scale", "depth_floor", "attack_fraction", "clean_fraction"):
            _check_prob(name, getattr(self, name))
        _check_choice("mode", self.mode, Mode)
        _check_choice("gate_per", self.gate_per, GatePer)
        _check_choice("region", self.region, Region)
        _check_choice("step_profile", self.step_profile, StepProfile)
        _check_choice("layer_profile", self.layer_profile, LayerProfile)
        _check_choice("depth_profile", self.depth_profile, DepthProfile)
        if not self.points or any(p not in POINTS for p in self.points):
            raise ConfigError(f"AblationSchedule.points must be a non-empty subset of {POINTS}, got {self.points!r}")
        lead_ok = self.region_lead == "post" or (type(self.region_lead) is int and self.region_lead >= 0)
        if not lead_ok or (self.region_lead and self.region != "response"):
            raise ConfigError(f"AblationSchedule.region_lead must be an int >= 0 or 'post' and applies to "
                              f"region='response' only, got {self.region_lead!r} with region={self.region!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"AblationSchedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.total_steps is not None and self.total_steps <= self.warmup_steps:
            raise ConfigError(
                f"AblationSchedule.total_steps ({self.total_steps}) must be > warmup_steps ({self.warmup_steps})"
            )
        if self.step_profile == "step":
            if not self.milestones or len(self.milestones) != len(self.milestone_scales):
                raise ConfigError(
                    "AblationSchedule.step_profile='step' needs milestones and milestone_scales of equal, "
                    f"non-zero length; got {len(self.milestones)} and {len(self.milestone_scales)}"
                )
            if list(self.milestones) != sorted(set(self.milestones)):
                raise ConfigError(f"AblationSchedule.milestones must be strictly increasing, got {self.milestones}")
            for v in self.milestone_scales:
                _check_prob("milestone_scales", v)
        if self.layer_profile == "window":
            w = self.layer_window
            if w is None or len(w) != 2 or not 0 <= w[0] < w[1]:
                raise ConfigError(
                    f"AblationSchedule.layer_profile='window' needs layer_window=(first, stop) with "
                    f"0 <= first < stop, got {w!r}"
                )
        if self.layer_profile == "array":
            if not self.layer_weights:
                raise ConfigError("AblationSchedule.layer_profile='array' needs layer_weights (one per layer)")
            for v in self.layer_weights:
                _check_prob("layer_weights", v)
        if self.bump_width <= 0:
            raise ConfigError(f"AblationSchedule.bump_width must be > 0 layers, got {self.bump_width}")
        if self.depth_half_life <= 0:
            raise ConfigError(f"AblationSchedule.depth_half_life must be > 0 tokens, got {self.depth_half_life}")
        if self.depth_first < 1:
            raise ConfigError(f"AblationSchedule.depth_first must be >= 1 token, got {self.depth_first}")
        if self.depth_profile == "array":
            if not self.depth_weights:
                raise ConfigError("AblationSchedule.depth_profile='array' needs depth_weights")
            for v in self.depth_weights:
                _check_prob("depth_weights", v)
        if self.mode == "paper":
            if self.p_site != self.p_token:
                raise ConfigError(
                    f"AblationSchedule.mode='paper' uses one p for both factors, but p_site={self.p_site} and "
                    f"p_token={self.p_token}; set them equal (AblationSchedule.paper(p)) or use mode='gated'"
                )
            flat = {"step_profile": "constant", "layer_profile": "uniform", "depth_profile": "flat",
                    "gate_per": "batch", "attack_fraction": 0.0, "clean_fraction": 0.0}
            bad = [k for k, v in flat.items() if getattr(self, k) != v]
            if bad:
                raise ConfigError(
                    f"AblationSchedule.mode='paper' has no profiles, but {', '.join(bad)} differ from the paper's "
                    f"{ {k: flat[k] for k in bad} }; use mode='gated' for profiles"
                )

    # -- construction and persistence --------------------------------------------------------
    @classmethod
    def paper(cls, p: float = 0.5, **kwargs: Any) -> "AblationSchedule":
        """Xie et al.'s schedule: site gate and token mask both Bernoulli(p); realized rate p**2."""
        return cls(p_site=p, p_token=p, mode="paper", **kwargs)

    def resolve_lead(self, n_post: int) -> "AblationSchedule":
        """This schedule with ``region_lead="post"`` made the chat template's number of post-instruction
        tokens (``model.chat.n_post``); any other schedule unchanged."""
        return replace(self, region_lead=n_post) if self.region_lead == "post" else self

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AblationSchedule":
        check_fields(cls, d)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    # -- the pure probability functions --------------------------------------------------------
    def step_scale(self, step: int) -> float:
        """The step profile's multiplier of ``p_site`` at ``step`` (0-based), in [0, 1]."""
        if self.step_profile == "constant":
            return 1.0
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.step_profile == "step":
            scale = 1.0
            for m, v in zip(self.milestones, self.milestone_scales):
                if step >= m:
                    scale = v
            return scale
        if self.total_steps is None:
            return 1.0
        frac = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        if self.step_profile == "linear":
            return 1.0 + (self.final_scale - 1.0) * frac
        return self.final_scale + (1.0 - self.final_scale) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def layer_weights_for(self, n_layers: int, direction_layer: "int | None" = None) -> Float[Tensor, "layer"]:
        """The layer profile's multiplier of ``p_site`` for each layer."""
        layers = torch.arange(n_layers, dtype=torch.float32)
        if self.layer_profile == "uniform":
            return torch.ones(n_layers)
        if self.layer_profile == "window":
            first, stop = self.layer_window  # type: ignore[misc]
            if first >= n_layers:
                raise ConfigError(f"AblationSchedule.layer_window {self.layer_window} lies past the model's {n_layers} layers")
            return ((layers >= first) & (layers < stop)).float()
        if self.layer_profile == "bump":
            center = self.bump_center if self.bump_center is not None else direction_layer
            if center is None:
                raise ConfigError(
                    "AblationSchedule.layer_profile='bump' needs bump_center, or a direction that records its layer"
                )
            return torch.exp(-0.5 * ((layers - center) / self.bump_width) ** 2)
        if len(self.layer_weights) != n_layers:
            raise ConfigError(
                f"AblationSchedule.layer_weights has {len(self.layer_weights)} entries but the model has {n_layers} layers"
            )
        return torch.tensor(self.layer_weights, dtype=torch.float32)

    def depth_weights_for(self, depth: Int[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """The depth profile's multiplier of ``p_token`` for token depths ``>= 0`` (any shape)."""
        d = depth.clamp(min=0).float()
        if self.depth_profile == "flat":
            return torch.ones_like(d)
        if self.depth_profile == "decay":
            return self.depth_floor + (1.0 - self.depth_floor) * torch.pow(0.5, d / self.depth_half_life)
        if self.depth_profile == "first":
            return torch.where(d < self.depth_first, torch.ones_like(d), torch.full_like(d, self.depth_floor))
        table = torch.tensor(self.depth_weights, dtype=torch.float32, device=depth.device)
        return table[depth.clamp(min=0, max=len(self.depth_weights) - 1)]

    def site_probabilities(
        self, step: int, n_layers: int, direction_layer: "int | None" = None
    ) -> Float[Tensor, "layer"]:
        """``p_site`` after the step and layer profiles, per layer."""
        return (self.p_site * self.step_scale(step) * self.layer_weights_for(n_layers, direction_layer)).clamp(0, 1)

    def probability_grid(
        self, step: int, n_layers: int, max_depth: int, direction_layer: "int | None" = None
    ) -> Float[Tensor, "layer depth"]:
        """Expected ablation probability of a region cell at each (layer, depth), for plots and checks, with the
        ``attack_fraction`` (every cell on those steps) and the ``clean_fraction`` (rows without any) included."""
        site = self.site_probabilities(step, n_layers, direction_layer)
        token = self.p_token * self.depth_weights_for(torch.arange(max_depth))
        base = site[:, None] * token[None, :]
        return (1.0 - self.clean_fraction) * (self.attack_fraction + (1.0 - self.attack_fraction) * base)

    def expected_rate(self, *, step: int, n_layers: int, direction_layer: "int | None" = None) -> float:
        """Expected fraction of ablated (site, region token) cells for a flat depth profile.

        With the ``attack_fraction`` (full ablation on those steps) and the ``clean_fraction`` (rows without
        any) included. For depth profiles use :meth:`probability_grid` averaged over the depths that occur.
        """
        base = float(self.site_probabilities(step, n_layers, direction_layer).mean()) * self.p_token
        return (1.0 - self.clean_fraction) * (self.attack_fraction + (1.0 - self.attack_fraction) * base)
