"""Interventions on the residual stream: ablation, activation addition, weight orthogonalization."""

from drtk.interventions.core import add_direction, project_out, project_out_subspace, unit
from drtk.interventions.hooks import ablation, ablation_hooks, actadd, actadd_hooks, hook_scope, layer_bases
from drtk.interventions.orthogonalize import orthogonalize

__all__ = [
    "ablation", "ablation_hooks", "actadd", "actadd_hooks", "add_direction", "hook_scope", "layer_bases",
    "orthogonalize", "project_out", "project_out_subspace", "unit",
]
