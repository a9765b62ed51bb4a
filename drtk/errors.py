"""Errors raised by drtk.

Every error drtk raises for bad input derives from :class:`DrtkError`, so a notebook can catch them all
with one ``except``. Messages say what went wrong, where, what was expected and how to fix it.
"""


class DrtkError(Exception):
    """Base class of every error drtk raises on purpose."""


class ModelLoadError(DrtkError):
    """A model name or path could not be resolved or loaded."""


class ChatTemplateError(DrtkError):
    """The tokenizer has no usable chat template, or the template has no post-instruction tokens."""


class DataError(DrtkError):
    """A prompt set or training set is missing, empty, one-sided or malformed."""


class BenchmarkUnavailableError(DataError):
    """A public benchmark was asked for by name but its published source cannot be reached."""


class DirectionMismatchError(DrtkError):
    """A direction does not fit the model it is used with (width, layer count, model id)."""


class ConfigError(DrtkError, ValueError):
    """A configuration value is out of range or inconsistent with another one."""


class RegistryError(DrtkError, KeyError):
    """A name was looked up in a registry (attacks, judges, profiles) and not found."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly instead.
        return str(self.args[0]) if self.args else ""


class TrainingError(DrtkError):
    """Training stopped: non-finite loss, a checkpoint that does not match, an interrupted run."""


class StageError(DrtkError):
    """A stage of a cached pipeline (``drtk demo``) failed; the stages finished before it are kept."""


def unknown_name_error(kind: str, name: str, available: "list[str] | tuple[str, ...]") -> RegistryError:
    """Build a registry error with a "did you mean" hint, in the manner of lm-eval's registries."""
    import difflib

    close = difflib.get_close_matches(name, list(available), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return RegistryError(f"unknown {kind} {name!r}.{hint} Available: {', '.join(sorted(available))}.")


def check_fields(cls: type, d: "dict[str, object]") -> None:
    """Raise a :class:`ConfigError` naming every key of ``d`` that is not a field of dataclass ``cls``."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; known: {sorted(known)}")


def prompt_list(prompts: object, what: str = "prompts") -> list:
    """``list(prompts)``, refusing one string (which would be read as one prompt per character)."""
    if isinstance(prompts, str):
        raise DataError(f"{what} must be a list of prompts, got one string ({prompts[:40]!r}); wrap it in a list")
    return list(prompts)  # type: ignore[call-overload]
