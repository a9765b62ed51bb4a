"""``templates``: role-play and instruction-override jailbreak templates written for this project
(:func:`drtk.data.load_jailbreak_templates`); the knob picks the template, a sweep runs them all.
"""

from dataclasses import dataclass
from typing import Any, Sequence

from drtk.attacks.base import Attack, AttackContext, AttackInputs, register_attack
from drtk.errors import unknown_name_error


def _templates() -> dict[str, Any]:
    from drtk.data import load_jailbreak_templates

    return {t.name: t for t in load_jailbreak_templates()}


@register_attack
@dataclass(frozen=True, kw_only=True)
class Templates(Attack):
    """Attributes:
    template: a template name (see ``load_jailbreak_templates()``); None: the first one. ``sweep()`` runs all.
    """

    name = "templates"
    knob = "template"
    template: "str | None" = None

    def __post_init__(self) -> None:
        known = _templates()
        if self.template is None:
            object.__setattr__(self, "template", next(iter(known)))
        elif self.template not in known:
            raise unknown_name_error("jailbreak template", self.template, list(known))

    def sweep(self, values: "Sequence[Any] | None" = None) -> list[Attack]:
        return [Templates(template=n) for n in (list(values) if values is not None else list(_templates()))]

    def prepare(self, model: Any, prompts: Sequence[str], context: AttackContext) -> AttackInputs:
        t = _templates()[self.template]
        return AttackInputs(tuple(t.apply(p) for p in prompts), shown=(self.template,) * len(prompts))
