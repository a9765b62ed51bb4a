"""The attack interface: a frozen config whose ``run`` turns prompts into completions plus a record.

An attack acts in up to two places, and each attack module fills in only what it needs:

* **inputs** (:meth:`Attack.prepare`): what the attacker controls in the conversation, per prompt: a
  rewritten instruction (jailbreak template, adversarial suffix), a prefill that starts the assistant
  turn, or token ids built directly (GCG, soft prompts);
* **the model** (:meth:`Attack.applied`): a scoped edit of the model under attack (directional ablation,
  activation addition, weight orthogonalization, weight interpolation) that is undone on exit.

:meth:`Attack.run` prepares the inputs, opens the edit, generates with :func:`drtk.generation.generate`
and records what was done and what it cost. Because the model edit is a scope of its own, the evaluation
harness can measure the capability cost (KL on benign prompts) of exactly the same edit.

Example:
    >>> attack = get_attack("prefill", k=8)                              # doctest: +SKIP
    >>> result = attack.run(model, prompts, context=AttackContext())     # doctest: +SKIP
    >>> result.completions[0], result.inputs[0]                          # doctest: +SKIP
"""

import dataclasses
import logging
import math
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import Tensor

from drtk.errors import ConfigError, DataError, unknown_name_error
from drtk.generation import GenerationConfig, generate, generate_ids

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class AttackContext:
    """What an attack may use besides the model and the prompts (so every ``run`` has one signature).

    Attributes:
        direction: a :class:`~drtk.directions.Direction` (e.g. found on the model before training: the
            "transfer" attack); attacks that need one and get none fall back to a fresh one where that
            makes sense, and say so in their metadata.
        reference: the reference/base model (``lora-interpolation`` blends toward it; ``prefill`` with
            ``source="reference"`` takes its answers).
        harmful_fit, harmless_fit, harmful_val, harmless_val: prompts adaptive attacks fit and select
            directions on; default: the ``fit``/``val`` splits of drtk's shipped sets (disjoint from the
            ``test`` split used for evaluation), cut to ``n_fit``/``n_val``.
        answers: harmful answers per prompt (a dataset column) for ``prefill`` with ``source="answers"``.
        generation: generation settings for the completions that are judged.
        generator: RNG for everything random in an attack (sampling, GCG candidates, soft-prompt init).
        selection: a :class:`~drtk.directions.SelectionConfig` for fresh directions (None: small default).
        n_fit, n_val: sizes of the default fit/val sets.
        cache: scratch space shared by attacks of one evaluation (fresh directions, generated prefills),
            keyed by what they depend on.
    """

    direction: Any = None
    reference: Any = None
    harmful_fit: "Sequence[str] | None" = None
    harmless_fit: "Sequence[str] | None" = None
    harmful_val: "Sequence[str] | None" = None
    harmless_val: "Sequence[str] | None" = None
    answers: "dict[str, str] | None" = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    generator: "torch.Generator | None" = None
    selection: Any = None
    n_fit: int = 64
    n_val: int = 32
    cache: dict = field(default_factory=dict, repr=False)

    def fit_sets(self) -> dict[str, list[str]]:
        """The four prompt lists adaptive attacks fit on (defaults: shipped fit/val splits)."""
        from drtk.data import standard_splits

        out = {}
        for key, (name, split, n) in {"harmful_fit": ("harmful", "fit", self.n_fit),
                                      "harmless_fit": ("harmless", "fit", self.n_fit),
                                      "harmful_val": ("harmful", "val", self.n_val),
                                      "harmless_val": ("harmless", "val", self.n_val)}.items():
            given = getattr(self, key)
            out[key] = list(given) if given is not None else list(standard_splits(name)[split].prompts[:n])
            if not out[key]:
                raise DataError(f"AttackContext.{key} is empty; adaptive attacks need prompts to fit on")
        return out


@dataclass(frozen=True)
class AttackInputs:
    """Per-prompt attacker inputs. Exactly one of ``instructions`` / ``ids`` drives generation.

    Attributes:
        instructions: the user messages actually sent (rewritten prompts).
        prefills: text starting each assistant turn, or None.
        ids: token ids of whole formatted prompts (attacks that work on tokens), or None.
        shown: what to record as "the attack input" per prompt (suffix, prefill, template name).
        metadata: recorded with the result (e.g. optimisation traces); extra: private to the attack.
    """

    instructions: tuple[str, ...]
    prefills: "tuple[str, ...] | None" = None
    ids: "tuple[tuple[int, ...], ...] | None" = None
    shown: "tuple[str, ...] | None" = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: Any = None


@dataclass(frozen=True)
class AttackResult:
    """What one attack setting produced on a list of prompts.

    Attributes:
        attack: the attack's label, e.g. ``"prefill[k=8]"`` (its name plus the knob value, if any).
        name: the registered attack name.
        params: the attack config (``to_dict``).
        prompts: the original harmful prompts, in order.
        completions: one generated completion per prompt (prefills are not repeated in it).
        prefills: the text put at the start of each assistant turn, for attacks that prefill (else None).
        inputs: per prompt, what the attacker supplied (prefill, suffix, template name; "" for none).
        knob, knob_value: the strength knob and its value (None for attacks without one).
        metadata: direction provenance and attack-specific details.
        seconds: wall time of ``run``; forward_passes: batched forward calls of the model(s) under attack.
    """

    attack: str
    name: str
    params: dict[str, Any]
    prompts: tuple[str, ...]
    completions: tuple[str, ...]
    inputs: tuple[str, ...]
    knob: "str | None" = None
    knob_value: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    forward_passes: int = 0
    prefills: "tuple[str, ...] | None" = None


@contextmanager
def count_forwards(model: Any) -> Iterator[list[int]]:
    """Count forward calls through the model's first block (any entry point, ids or embeddings)."""
    counter = [0]

    def count(acts: Tensor, hook: Any) -> None:
        counter[0] += 1

    with model.hooks([("blocks.0.hook_resid_pre", count)]):  # on the HF block: passes stay plain
        yield counter


def no_direction_message(attack: str) -> str:
    return (f"attack {attack!r} uses the given direction but none was passed (AttackContext.direction / "
            "`drtk eval --direction DIR`); pass one, or set direction_source='fresh' to re-extract it")


@dataclass(frozen=True, kw_only=True)
class Attack:
    """Base class: subclasses are frozen keyword-only dataclasses registered with :func:`register_attack`.

    Class attributes:
        name: registry name.
        knob: the field that sets the attack's strength (for sweeps and ASR-vs-KL curves), or None.
        default_sweep: knob values a sweep runs when none are given.
        edits_model: True when :meth:`applied` changes the model (so a KL cost can be measured).
    """

    name: ClassVar[str] = ""
    knob: ClassVar["str | None"] = None
    default_sweep: ClassVar[tuple] = ()
    edits_model: ClassVar[bool] = False

    # -- what subclasses override ------------------------------------------------------------
    def prepare(self, model: Any, prompts: Sequence[str], context: AttackContext) -> AttackInputs:
        """Attacker inputs per prompt (default: the prompts unchanged)."""
        return AttackInputs(tuple(prompts))

    @contextmanager
    def applied(self, model: Any, context: AttackContext) -> Iterator[Any]:
        """Scope in which the model is under attack; yields the model to generate with."""
        yield model

    def generate(self, model: Any, inputs: AttackInputs, context: AttackContext) -> list[str]:
        """Generate the completions under attack (default: :func:`generate_inputs`)."""
        return generate_inputs(model, inputs, context.generation, context.generator)

    def describe(self, context: AttackContext) -> dict[str, Any]:
        """Extra metadata recorded with the result (e.g. direction provenance)."""
        return {}

    def check(self, model: Any, context: AttackContext) -> None:
        """Raise :class:`ConfigError` when ``context`` lacks what this attack needs.

        :func:`drtk.evaluation.evaluate` calls it for every attack before running any, so that a missing
        direction or reference stops an evaluation at once instead of after the attacks before it. Attacks
        that read the context's direction say so with a ``direction_source`` field (``given``/``fresh``).
        """
        if getattr(self, "direction_source", None) == "given" and context.direction is None:
            raise ConfigError(no_direction_message(self.name))

    # -- shared machinery ----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"{self.name}[{self.knob}={getattr(self, self.knob)}]" if self.knob else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} | {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def sweep(self, values: "Sequence[Any] | None" = None) -> list["Attack"]:
        """One attack per knob value (``values`` or :attr:`default_sweep`); itself if there is no knob."""
        values = list(values if values is not None else self.default_sweep)
        if not self.knob or not values:
            return [self]
        return [dataclasses.replace(self, **{self.knob: v}) for v in values]

    def run(self, model: Any, prompts: Sequence[str], *, context: "AttackContext | None" = None) -> AttackResult:
        """Attack ``model`` on ``prompts``; returns completions, the inputs used, metadata and cost."""
        context = context or AttackContext()
        prompts = list(prompts)
        if not prompts:
            raise DataError(f"attack {self.name!r} got no prompts")
        start = time.perf_counter()
        with ExitStack() as stack:
            calls = [stack.enter_context(count_forwards(model))]
            inputs = self.prepare(model, prompts, context)
            target = stack.enter_context(self.applied(model, context))
            if target is not model:
                calls.append(stack.enter_context(count_forwards(target)))
            completions = self.generate(target, inputs, context)
            passes = sum(c[0] for c in calls)
        shown = inputs.shown or inputs.prefills or ("",) * len(prompts)
        return AttackResult(
            attack=self.label, name=self.name, params=self.to_dict(), prompts=tuple(prompts),
            completions=tuple(completions), inputs=tuple(shown), knob=self.knob,
            knob_value=getattr(self, self.knob) if self.knob else None, metadata=self.describe(context) | inputs.metadata,
            seconds=time.perf_counter() - start, forward_passes=passes, prefills=inputs.prefills,
        )


def generate_inputs(model: Any, inputs: AttackInputs, cfg: GenerationConfig, generator: Any = None) -> list[str]:
    """Generate from :class:`AttackInputs` (text prompts through the template, or token ids as given)."""
    if inputs.ids is None:
        return generate(model, inputs.instructions, prefills=inputs.prefills, config=cfg, generator=generator)
    out: list[str] = []
    pad = model.tokenizer.pad_token_id
    for i in range(0, len(inputs.ids), cfg.batch_size):
        ids, mask = left_pad(inputs.ids[i : i + cfg.batch_size], pad, model.device)
        new = generate_ids(model, ids, mask, cfg, generator)
        out.extend(model.tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Tensor, Tensor]:
    """Left-pad token id rows into ``(input_ids, attention_mask)``, both ``(batch, pos)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(list(r))
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


# -- registry -----------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make ``cls`` available to :func:`get_attack` under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no `name`")
    _REGISTRY[cls.name] = cls
    return cls


def available_attacks() -> list[str]:
    return sorted(_REGISTRY)


def attack_class(name: str) -> type[Attack]:
    if name not in _REGISTRY:
        raise unknown_name_error("attack", name, available_attacks())
    return _REGISTRY[name]


def get_attack(name: str, **params: Any) -> Attack:
    """Build a registered attack, e.g. ``get_attack("actadd", coeff=2.0)``.

    Raises:
        RegistryError: unknown name (lists the available attacks, with a did-you-mean hint).
        ConfigError: a parameter the attack does not have, or an invalid value.
    """
    cls = attack_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ConfigError(f"attack {name!r} has no parameter(s) {unknown}; its parameters are {sorted(fields)}")
    return cls(**params)


def parse_value(cls: type[Attack], key: str, text: str) -> Any:
    """Convert a command-line string to the type of field ``key``'s default."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"attack {cls.name!r} has no parameter {key!r}; its parameters are {sorted(fields)}")
    default = fields[key].default
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
    except ValueError:
        kind = "finite float" if isinstance(default, float) else type(default).__name__
        raise ConfigError(f"{cls.name}.{key} expects a {kind}, got {text!r}") from None
    return None if text.lower() == "none" else text


def parse_attack_spec(spec: str, *, sweep: bool = True) -> list[Attack]:
    """Parse ``name[:key=value[,..]]`` where a value may list sweep points with ``/``.

    ``"prefill:k=4/16"`` gives two attacks; ``"actadd"`` gives its default sweep (or its default
    setting when ``sweep`` is False); ``"gcg:steps=20:candidates=64"`` sets two fields.
    """
    name, *parts = spec.strip().split(":")
    cls = attack_class(name.strip())
    fixed: dict[str, Any] = {}
    swept: "tuple[str, list[Any]] | None" = None
    for part in parts:
        if "=" not in part:
            raise ConfigError(f"attack spec {spec!r}: expected key=value after ':', got {part!r}")
        key, raw = (s.strip() for s in part.split("=", 1))
        values = [parse_value(cls, key, v) for v in raw.split("/")]
        if len(values) > 1:
            swept = (key, values)
        else:
            fixed[key] = values[0]
    attack = get_attack(cls.name, **fixed)
    if swept is not None:
        return [dataclasses.replace(attack, **{swept[0]: v}) for v in swept[1]]
    if cls.knob and cls.knob in fixed:
        return [attack]
    return attack.sweep() if sweep else [attack]
