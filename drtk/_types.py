"""Shared vocabulary: sites in the model and the names of tensor axes.

Axis names used in every jaxtyping annotation in drtk:

========== ==========================================================
``batch``  prompts in a batch
``pos``    token positions (left-padded batches keep the prompt's end aligned)
``post``   post-instruction positions (the chat-template tokens after the instruction)
``layer``  decoder blocks, ``0 .. n_layers - 1``
``d_model`` residual-stream width
``k``      directions in a subspace
``vocab``  vocabulary
========== ==========================================================
"""

import re
from dataclasses import dataclass
from typing import Literal, get_args

Point = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
POINTS: tuple[str, ...] = get_args(Point)

#: The three places DeepRefusal and directional ablation edit: the residual stream entering each block
#: and the two things each block writes into it.
ABLATION_POINTS: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out")

_SITE_RE = re.compile(r"^blocks\.(\d+)\.hook_(\w+)$")


@dataclass(frozen=True, order=True)
class Site:
    """One place in the model, named exactly like the TransformerLens hook there.

    >>> Site(3, "attn_out")
    Site('blocks.3.hook_attn_out')
    >>> Site.parse("blocks.3.hook_resid_pre").layer
    3
    """

    layer: int
    point: str

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise ValueError(f"Site point {self.point!r} is not one of {POINTS}.")
        if self.layer < 0:
            raise ValueError(f"Site layer must be >= 0, got {self.layer}.")

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.point}"

    def __str__(self) -> str:
        return self.hook_name

    def __repr__(self) -> str:
        return f"Site({self.hook_name!r})"

    @classmethod
    def parse(cls, name: str) -> "Site":
        m = _SITE_RE.match(name)
        if not m:
            raise ValueError(f"{name!r} is not a site name like 'blocks.3.hook_resid_pre'.")
        return cls(int(m.group(1)), m.group(2))


def all_sites(n_layers: int, points: "tuple[str, ...] | list[str]" = ABLATION_POINTS) -> list[Site]:
    """Every site of the given points at every layer, in forward order."""
    return [Site(layer, p) for layer in range(n_layers) for p in points]
