"""``none``: plain generation, the baseline every attack is compared with."""

from dataclasses import dataclass

from drtk.attacks.base import Attack, register_attack


@register_attack
@dataclass(frozen=True, kw_only=True)
class NoAttack(Attack):
    """Greedy generation from the chat-formatted prompts; nothing is changed."""

    name = "none"
