"""Attacks on refusal: one module per attack, one small interface (:class:`Attack`).

=================== ==========================================================================
``none``            plain generation
``prefill``         the assistant turn starts with k tokens of a harmful answer (knob ``k``)
``direction-ablation`` ablate a given direction (the paper's "transfer" attack; knob ``strength``)
``fresh-ablation``  re-extract and re-select the direction on the attacked model, ablate it (adaptive)
``per-layer-ablation`` a direction or k-dim subspace per layer, fit on the attacked model (knob ``k``)
``actadd``          subtract the direction at its layer (knob ``coeff``)
``orthogonalize``   weight orthogonalization with a given or fresh direction
``prefill+ablation`` both at once
``gcg``             greedy coordinate gradient adversarial suffix (budget: steps x candidates)
``embedding``       continuous soft-prompt suffix (budget: steps)
``lora-interpolation`` blend toward the base model, ``W_base + lam (W - W_base)``, then attack (knob ``lam``)
``templates``       role-play / instruction-override jailbreak templates (knob ``template``)
=================== ==========================================================================

Example:
    >>> from drtk.attacks import AttackContext, get_attack                      # doctest: +SKIP
    >>> ctx = AttackContext(direction=Direction.load("runs/dir"))               # doctest: +SKIP
    >>> res = get_attack("direction-ablation").run(model, prompts, context=ctx)  # doctest: +SKIP
"""

from drtk.attacks import (  # noqa: F401  (registration)
    actadd, direction_ablation, embedding, fresh_ablation, gcg, lora_interpolation, none, orthogonalize,
    per_layer_ablation, prefill, prefill_ablation, templates,
)
from drtk.attacks.base import (
    Attack, AttackContext, AttackInputs, AttackResult, available_attacks, get_attack, parse_attack_spec,
    register_attack,
)

__all__ = [
    "Attack", "AttackContext", "AttackInputs", "AttackResult", "available_attacks", "get_attack",
    "parse_attack_spec", "register_attack",
]
