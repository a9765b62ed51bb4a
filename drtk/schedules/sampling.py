"""Drawing ablation masks from a schedule, vectorised, from a passed-in ``torch.Generator``.

One forward pass needs one ``(batch, pos)`` weight per site. They are drawn all at once: a site gate
``(site, 1 or batch)`` and a token mask ``(site, batch, pos)``, multiplied by the region mask. The region
is located per row from ``response_start`` (the padded index of each row's first assistant token) and
the attention mask, so left and right padding give the same masks on the same real tokens: token depth
counts from each row's own region start, never from column 0.

:class:`ScheduleSampler` is the small stateful wrapper the training loop holds: it knows the step, owns
its generator, hands ``ablation_hooks`` a ``mask_fn`` and records the realized ablation rate; its
``state_dict()`` makes a resumed run draw exactly the masks an uninterrupted one would.
"""

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from drtk._types import Site, all_sites
from drtk.errors import ConfigError
from drtk.schedules.schedule import AblationSchedule


def region_and_depth(
    attention_mask: Int[Tensor, "batch pos"],
    response_start: Int[Tensor, "batch"],
    region: str,
) -> tuple[Bool[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Which real tokens lie in ``region``, and each token's depth from its row's region start.

    Args:
        attention_mask: 1 on real tokens, 0 on padding (either side).
        response_start: per row, the padded index of the first response token (== the row's last real
            index + 1 when the row has no response yet).
        region: ``"response"``, ``"prompt"`` or ``"all"``.
    """
    real = attention_mask.bool()
    col = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :]
    first_real = real.int().argmax(dim=1, keepdim=True)  # first real column of each row
    start = response_start[:, None].to(col.device)
    if region == "response":
        return real & (col >= start), col - start
    if region == "prompt":
        return real & (col < start), col - first_real
    return real, col - first_real


@dataclass(frozen=True)
class Masks:
    """The masks of one forward pass.

    Attributes:
        sites: the sites, in the order of the first axis of ``weights``.
        weights: ``(site, batch, pos)`` 0/1 ablation weights (0 outside the region and on padding).
        region: ``(batch, pos)`` the cells that may be ablated.
        full: True when this step is an attacker-in-the-loop step (everything in the region ablated).
    """

    sites: tuple[Site, ...]
    weights: Float[Tensor, "site batch pos"]
    region: Bool[Tensor, "batch pos"]
    full: bool = False

    @property
    def realized_rate(self) -> float:
        """Fraction of ablated (site, region token) cells; NaN when the region is empty."""
        cells = float(self.region.sum()) * len(self.sites)
        return float(self.weights.sum()) / cells if cells else float("nan")

    def for_site(self, site: Site) -> Float[Tensor, "batch pos"]:
        return self.weights[self.sites.index(site)]

    def active_sites(self) -> list[Site]:
        """The sites with at least one ablated cell (one host sync): hooking only these leaves the
        others' activations, and their autograd graph, untouched."""
        return [s for s, on in zip(self.sites, self.weights.flatten(1).any(1).tolist()) if on]


def sample_masks(
    schedule: AblationSchedule,
    *,
    step: int,
    sites: Sequence[Site],
    attention_mask: Int[Tensor, "batch pos"],
    response_start: Int[Tensor, "batch"],
    generator: torch.Generator,
    direction_layer: "int | None" = None,
    n_layers: "int | None" = None,
) -> Masks:
    """Draw the ablation masks of one forward pass (pure given the generator's state).

    Random numbers are drawn on the generator's device in a fixed amount per call (one gate draw, one
    token draw of ``(site, batch, pos)``, one attack draw, and with a ``clean_fraction`` one draw per
    row), so the stream stays aligned across steps.
    """
    sites = tuple(sites)
    if not sites:
        raise ConfigError("sample_masks needs at least one site")
    n_layers = n_layers if n_layers is not None else max(s.layer for s in sites) + 1
    B, T = attention_mask.shape
    if isinstance(schedule.region_lead, str):
        raise ConfigError("AblationSchedule.region_lead='post' needs the chat template: pass "
                          "schedule.resolve_lead(model.chat.n_post)")
    gdev = generator.device
    start = response_start.to(gdev) - schedule.region_lead
    region, depth = region_and_depth(attention_mask.to(gdev), start, schedule.region)
    p_layer = schedule.site_probabilities(step, n_layers, direction_layer).to(gdev)
    p_site = p_layer[torch.tensor([s.layer for s in sites], device=gdev)]  # (site,)
    p_tok = schedule.p_token * schedule.depth_weights_for(depth)  # (batch, pos)
    n_gate = 1 if schedule.gate_per == "batch" else B
    gate = torch.rand(len(sites), n_gate, generator=generator, device=gdev) < p_site[:, None]
    token = torch.rand(len(sites), B, T, generator=generator, device=gdev) < p_tok[None]
    attack = bool(torch.rand(1, generator=generator, device=gdev) < schedule.attack_fraction)
    if attack:
        weights = region[None].expand(len(sites), B, T).float()
    else:
        weights = (gate[:, :, None] & token & region[None]).float()
    if schedule.clean_fraction > 0:  # drawn only when asked for, so other schedules keep their stream
        clean = torch.rand(B, generator=generator, device=gdev) < schedule.clean_fraction
        weights = weights * (~clean).float()[None, :, None]
    return Masks(sites, weights.to(attention_mask.device), region.to(attention_mask.device), attack)


class ScheduleSampler:
    """The resumable wrapper the training loop holds around an :class:`AblationSchedule`.

    Args:
        schedule: the schedule.
        n_layers: the model's layer count (sites are every ``schedule.points`` of every layer).
        seed: seeds this sampler's own generator (the global RNG is never used).
        direction_layer: the direction's layer, for ``layer_profile="bump"`` without ``bump_center``.
        device: where masks are drawn (the model's device).
        n_post: the chat template's post-instruction token count, resolving ``region_lead="post"``.

    Example:
        >>> sampler = ScheduleSampler(AblationSchedule.paper(0.5), n_layers=3, seed=0)
        >>> masks = sampler.sample(attention_mask, response_start)            # doctest: +SKIP
        >>> with hook_scope(model, ablation_hooks(model, r, sites=sampler.sites, mask_fn=sampler.mask_fn)):
        ...     loss = ...; loss.backward()                                   # doctest: +SKIP
        >>> sampler.advance()                                                  # doctest: +SKIP
    """

    def __init__(
        self,
        schedule: AblationSchedule,
        *,
        n_layers: int,
        seed: int = 0,
        direction_layer: "int | None" = None,
        device: "torch.device | str" = "cpu",
        n_post: "int | None" = None,
    ) -> None:
        self.schedule = schedule.resolve_lead(n_post) if n_post is not None else schedule
        self.n_layers = n_layers
        self.direction_layer = direction_layer
        self.sites: tuple[Site, ...] = tuple(all_sites(n_layers, schedule.points))
        self._index = {s: i for i, s in enumerate(self.sites)}
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.step = 0
        self.current: "Masks | None" = None

    def sample(self, attention_mask: Tensor, response_start: Tensor) -> Masks:
        """Draw the masks for the next forward pass at the current step; they stay current until the
        next call (the ``mask_fn`` serves them)."""
        self.current = sample_masks(
            self.schedule, step=self.step, sites=self.sites, attention_mask=attention_mask,
            response_start=response_start, generator=self.generator, direction_layer=self.direction_layer,
            n_layers=self.n_layers,
        )
        return self.current

    def mask_fn(self, site: Site, acts: Tensor) -> Tensor:
        """For :func:`drtk.interventions.ablation_hooks`: the current mask of ``site``."""
        if self.current is None:
            raise RuntimeError("ScheduleSampler.mask_fn called before sample()")
        return self.current.weights[self._index[site]]

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
