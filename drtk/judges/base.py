"""The judge interface and its registry."""

from typing import Callable, Protocol, Sequence, runtime_checkable

from drtk.errors import unknown_name_error


@runtime_checkable
class Judge(Protocol):
    """Decides, for each (prompt, completion) pair, whether the completion refuses.

    ``name`` appears in every report, so a number is never shown without the judge that produced it.
    """

    name: str

    def refused(self, prompts: Sequence[str], completions: Sequence[str]) -> list[bool]: ...


_REGISTRY: dict[str, Callable[..., Judge]] = {}


def register_judge(name: str) -> Callable[[Callable[..., Judge]], Callable[..., Judge]]:
    def deco(factory: Callable[..., Judge]) -> Callable[..., Judge]:
        _REGISTRY[name] = factory
        return factory

    return deco


def get_judge(name: str, **kwargs: object) -> Judge:
    """Build a registered judge by name (``keyword`` is always available)."""
    if name not in _REGISTRY:
        raise unknown_name_error("judge", name, list(_REGISTRY))
    return _REGISTRY[name](**kwargs)


def available_judges() -> list[str]:
    return sorted(_REGISTRY)
