"""Training examples for rebuilding refusal, and their exact token-level encoding.

An :class:`Example` is one assistant turn to learn: ``prompt`` (the user's message), an optional
``prefix`` that starts the assistant turn but is *not* learned (the harmful opening of a recovery
example), and the ``response`` that is learned. Examples belong to a loss group: ``"harmful"``
(refusals, recovery) or ``"benign"`` (helpful answers to harmless and borderline prompts).

Encoding goes through the model's own chat format: ``format(prompt)`` is tokenised as the prompt, then
the prefix and the response are tokenised as separate segments and concatenated -- exactly the ids the
model sees when it generates after the prompt -- so the prompt/response boundary is exact to the token.
Labels are ``-100`` everywhere except the response tokens (and the end-of-turn token of a complete
response).

On-policy sources (nothing to download): :func:`build_training_set` generates helpful answers with the
model itself before training (benign prompts it refuses are answered again with its refusal direction
ablated, when a direction is given, so over-refusal is unlearned rather than kept), uses the model's own
refusals where it refuses (else a seeded choice of the shipped refusal texts: general ones, or ones
written for the prompt's topic), and takes harmful prefixes from the model's own answers -- generated while
its refusal direction is ablated when a direction is given, or as it is when it is still unaligned -- or
from a user's column (``harmful_answers=``). A :class:`GenerationCache` lets runs from one model share
these generations.
"""

import hashlib
import json
import logging
import random
import zlib
from collections import Counter
from contextlib import nullcontext
from functools import partial
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from drtk.errors import ConfigError, check_fields, DataError

logger = logging.getLogger(__name__)

Group = Literal["benign", "harmful"]
GROUPS: tuple[str, ...] = ("benign", "harmful")
_SENTINEL = "\u2063DRTK_RESPONSE\u2063"


@dataclass(frozen=True)
class Example:
    """One training example.

    Attributes:
        prompt: the user's message (formatted through the chat template when encoded).
        response: the text to learn.
        group: ``"benign"`` or ``"harmful"`` (the loss groups of the paper's weighting).
        kind: what it is (``refusal``, ``helpful``, ``borderline``, ``recovery``), for reports.
        prefix: text that opens the assistant turn before ``response`` and is masked out of the loss.
        complete: the response is a whole turn, so the end-of-turn token is learned after it (False for
            answers cut at a token budget: the model must not learn to stop there).
    """

    prompt: str
    response: str
    group: str
    kind: str
    prefix: str = ""
    complete: bool = True

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise DataError(f"Example.group must be one of {GROUPS}, got {self.group!r}")


@dataclass(frozen=True)
class TrainingSet:
    """The examples of a run (an immutable tuple with a summary)."""

    examples: tuple[Example, ...]

    def __post_init__(self) -> None:
        if not self.examples:
            raise DataError("the training set is empty; pass harmful and benign prompts to the builders")

    def __len__(self) -> int:
        return len(self.examples)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ex in self.examples:
            out[ex.kind] = out.get(ex.kind, 0) + 1
        return out

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(e) for e in self.examples])

    def prompts(self) -> dict[str, list[str]]:
        """Each loss group's distinct prompts, in order of first appearance (for ``save_training_record``)."""
        out: dict[str, dict[str, None]] = {g: {} for g in GROUPS}
        for ex in self.examples:
            out[ex.group][ex.prompt] = None
        return {g: list(ps) for g, ps in out.items() if ps}

    def require_groups(self, groups: Sequence[str] = GROUPS) -> "TrainingSet":
        """Raise :class:`DataError` when a loss group has no example (a one-sided set)."""
        have = {e.group for e in self.examples}
        missing = [g for g in groups if g not in have]
        if missing:
            raise DataError(
                f"the training set has no {' or '.join(missing)} examples ({self.counts()}); refusal training "
                "needs harmful prompts (to refuse) and benign prompts (to keep answering), or over-refusal follows"
            )
        return self


# -- builders (pure: texts in, examples out) -----------------------------------------------------------
def shipped_refusals(categories: "Sequence[str | None]", rng: random.Random) -> list[str]:
    """A shipped refusal for each harmful prompt: a general one, or one written for the prompt's category
    (self-harm, fraud, ...) when it has one; a topic refusal never goes to a prompt of another topic."""
    from drtk.data import load_texts

    general = load_texts("refusals", category="general")
    pools: dict[Any, tuple[str, ...]] = {}
    for c in set(categories):
        try:
            pools[c] = general + (load_texts("refusals", category=c) if c and c != "general" else ())
        except DataError:  # no refusal written for this category
            pools[c] = general
    return [rng.choice(pools[c]) for c in categories]


def refusal_examples(prompts: Sequence[str], refusals: Sequence[str]) -> list[Example]:
    """Harmful prompt -> refusal (one refusal per prompt, aligned)."""
    _same_length(prompts, refusals, "refusals")
    return [Example(p, r, "harmful", "refusal") for p, r in zip(prompts, refusals)]


def helpful_examples(
    prompts: Sequence[str], answers: Sequence[str], *, kind: str = "helpful", complete: "Sequence[bool] | None" = None
) -> list[Example]:
    """Harmless (or borderline: ``kind="borderline"``) prompt -> helpful answer."""
    _same_length(prompts, answers, "answers")
    done = list(complete) if complete is not None else [True] * len(prompts)
    return [Example(p, a, "benign", kind, complete=c) for p, a, c in zip(prompts, answers, done)]


def recovery_examples(
    prompts: Sequence[str],
    harmful_answers: Sequence[str],
    refusals: Sequence[str],
    *,
    tokenizer: Any,
    k_range: tuple[int, int] = (20, 25),
    seed: int = 0,
    joiner: str = "\n\n",
) -> list[Example]:
    """Harmful prompt -> the first k tokens of a harmful answer (not learned) -> refusal (learned).

    Args:
        k_range: inclusive range of prefix lengths in tokens, drawn per example (Qi et al.; DeepRefusal
            uses 20-25). Answers shorter than k keep all their tokens.
        joiner: text between the cut prefix and the refusal (part of the learned response).
    """
    _same_length(prompts, harmful_answers, "harmful_answers")
    _same_length(prompts, refusals, "refusals")
    lo, hi = k_range
    if not 1 <= lo <= hi:
        raise ConfigError(f"recovery k_range must satisfy 1 <= low <= high, got {k_range}")
    rng = random.Random(seed)
    out = []
    for prompt, answer, refusal in zip(prompts, harmful_answers, refusals):
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"][: rng.randint(lo, hi)]
        if not ids:
            continue
        prefix = tokenizer.decode(ids, skip_special_tokens=True)
        out.append(Example(prompt, joiner + refusal, "harmful", "recovery", prefix=prefix))
    return out


def _same_length(a: Sequence[Any], b: Sequence[Any], name: str) -> None:
    if len(a) != len(b):
        raise DataError(f"got {len(a)} prompts but {len(b)} {name}; pass one per prompt")


# -- on-policy sources -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """How :func:`build_training_set` turns prompt sets into examples.

    Attributes:
        max_response_tokens: generated answers (and refusals) are cut to this many tokens.
        recovery: add recovery examples (harmful prefix -> refusal) for every harmful prompt.
        recovery_tokens: inclusive (low, high) range of harmful prefix lengths in tokens.
        recovery_joiner: text between a recovery example's cut prefix and its refusal (learned with the
            refusal); ``""`` starts the refusal right after the cut. The default paragraph break is also
            where helpful answers go on ("Dear Sam,\n\n..."); measured on the embedded model, removing it
            does not stop helpful answers breaking off there (docs/adaptive-defense.md).
        refusal_source: ``"auto"`` (the model's own refusal where it refuses, else a shipped one),
            ``"model"`` (the same, logged when it falls back) or ``"shipped"`` (always the shipped texts).
        refusal_text: one refusal for every harmful prompt (refusal and recovery examples) instead of
            ``refusal_source``: the loss on harmful prompts then falls on the decision to refuse rather than
            on which of many refusals to write.
        prefix_source: harmful prefixes from the model ``"ablated"`` (its refusal direction ablated;
            needs a direction) or ``"plain"`` (as it is, for a still-unaligned model); ignored when
            ``harmful_answers`` are passed.
        generation_batch_size: prompts per generation batch.
        borderline_repeat: each borderline-benign example appears this many times (oversampling: the few
            prompts that look harmful but are safe carry the fight against over-refusal).
        hard_benign: the share of benign prompts (harmless and borderline together) that the model places
            nearest the harmful side -- the highest projections on its refusal direction, at the direction's
            layer and position -- to oversample (0: off; needs the direction and its layer). A defence
            over-refuses first the benign prompts its starting model already represents like harmful ones.
        hard_benign_repeat: extra copies of each of those examples (on top of ``borderline_repeat``).
        max_repeated: generated texts (helpful answers, harmful answers cut into recovery prefixes) whose
            share of words inside a repeated word trigram exceeds this are dropped (:func:`repeated_share`):
            a small model's looping letters ("Dear Sam,\n\nDear Sam,\n\n...") are poor helpful targets and
            poor harmful prefixes (on the embedded model dropping them at 0.7 changed neither defence's attack
            success or over-refusal beyond the seed spread; docs/adaptive-defense.md). 1.0 keeps everything.
        seed: seeds the refusal choice and the prefix lengths.
    """

    max_response_tokens: int = 48
    recovery: bool = False
    recovery_tokens: tuple[int, int] = (20, 25)
    recovery_joiner: str = "\n\n"
    refusal_source: str = "auto"
    refusal_text: "str | None" = None
    prefix_source: str = "ablated"
    generation_batch_size: int = 32
    borderline_repeat: int = 1
    hard_benign: float = 0.0
    hard_benign_repeat: int = 2
    max_repeated: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_response_tokens < 1:
            raise ConfigError(f"DataConfig.max_response_tokens must be >= 1, got {self.max_response_tokens}")
        lo, hi = self.recovery_tokens
        if not 1 <= lo <= hi:
            raise ConfigError(f"DataConfig.recovery_tokens must be (low, high) with 1 <= low <= high, got {self.recovery_tokens}")
        if self.refusal_source not in ("auto", "model", "shipped"):
            raise ConfigError(f"DataConfig.refusal_source must be auto, model or shipped, got {self.refusal_source!r}")
        if self.refusal_text is not None and not self.refusal_text.strip():
            raise ConfigError("DataConfig.refusal_text must be a non-empty text or None")
        if self.prefix_source not in ("ablated", "plain"):
            raise ConfigError(f"DataConfig.prefix_source must be ablated or plain, got {self.prefix_source!r}")
        if self.generation_batch_size < 1:
            raise ConfigError(f"DataConfig.generation_batch_size must be >= 1, got {self.generation_batch_size}")
        if self.borderline_repeat < 1:
            raise ConfigError(f"DataConfig.borderline_repeat must be >= 1, got {self.borderline_repeat}")
        if not 0 <= self.hard_benign <= 1:
            raise ConfigError(f"DataConfig.hard_benign must be a share in [0, 1], got {self.hard_benign}")
        if self.hard_benign_repeat < 1:
            raise ConfigError(f"DataConfig.hard_benign_repeat must be >= 1, got {self.hard_benign_repeat}")
        if not 0 < self.max_repeated <= 1:
            raise ConfigError(f"DataConfig.max_repeated must be a share in (0, 1], got {self.max_repeated}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recovery_tokens"] = list(self.recovery_tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataConfig":
        check_fields(cls, d)
        d = dict(d)
        if "recovery_tokens" in d:
            d["recovery_tokens"] = tuple(d["recovery_tokens"])
        return cls(**d)


def repeated_share(text: str, n: int = 3) -> float:
    """The share of a text's words that lie inside a word ``n``-gram occurring more than once in it.

    0 for text without a repeated ``n``-gram (and for text shorter than ``n + 1`` words); near 1 for a loop
    ("Dear Sam,\n\nDear Sam,\n\n..."). The embedded model's looping answers score 0.7 and above.
    """
    words = text.split()
    if len(words) <= n:
        return 0.0
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = [True] * n
    return sum(covered) / len(words)


def _generate(model: Any, prompts: Sequence[str], cfg: DataConfig) -> tuple[list[str], list[bool]]:
    """Greedy answers cut to ``max_response_tokens``, and whether each ended on its own."""
    from drtk.generation import GenerationConfig, generate

    texts = generate(model, list(prompts), config=GenerationConfig(
        max_new_tokens=cfg.max_response_tokens, batch_size=cfg.generation_batch_size))
    tok = model.tokenizer
    complete = [len(tok(t, add_special_tokens=False)["input_ids"]) < cfg.max_response_tokens for t in texts]
    return [t.strip() for t in texts], complete


class GenerationCache:
    """The greedy generations :func:`build_training_set` made, kept so a later run reuses them.

    Two runs from one model (a DeepRefusal run and an adaptive one from the same aligned model, say) generate
    the same helpful answers, refusals and harmful prefixes; the second reads them here instead. An entry is
    keyed by everything that shaped it: a checksum of the model's weights, the direction ablated (if any),
    the token budget and the prompt, so a stale entry is never used. ``path`` (JSON lines) persists it:
    read when it exists, written by :meth:`save`.
    """

    def __init__(self, path: "str | Path | None" = None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, tuple[str, bool]] = {}
        self.hits = 0
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.entries[row["key"]] = (row["text"], bool(row["complete"]))

    @staticmethod
    def key(model_sum: str, direction: "Tensor | None", max_tokens: int, prompt: str) -> str:
        d = "-" if direction is None else _tensor_hash(direction)
        return json.dumps([model_sum, d, max_tokens, prompt])

    def fetch(self, keys: Sequence[str], make: Callable[[list[int]], Sequence[tuple[str, bool]]]) -> list[tuple[str, bool]]:
        """The ``(text, complete)`` entries of ``keys``; ``make(indices)`` generates those of the missing ones."""
        todo = [i for i, k in enumerate(keys) if k not in self.entries]
        self.hits += len(keys) - len(todo)
        if todo:
            for i, entry in zip(todo, make(todo)):
                self.entries[keys[i]] = entry
        return [self.entries[k] for k in keys]

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(json.dumps({"key": k, "text": t, "complete": c}) + "\n"
                                         for k, (t, c) in self.entries.items()))


def _tensor_hash(t: Tensor) -> str:
    return hashlib.sha256(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


def weights_checksum(model: Any) -> str:
    """A checksum of every byte of a model's weights, with their names, shapes and dtypes (a CRC-32 of each
    tensor, a tied tensor read once, then SHA-256 over the lot): equal for the same weights, different after
    a change to any one of them. About 0.4 s for the embedded model on 2 CPU cores."""
    h = hashlib.sha256()
    crcs: dict[tuple, int] = {}
    for name, p in model.hf.state_dict().items():
        t = p.detach()
        where = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if where not in crcs:
            crcs[where] = zlib.crc32(memoryview(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()))
        h.update(f"{name}{tuple(t.shape)}{t.dtype}:{crcs[where]};".encode())
    return h.hexdigest()[:16]


def _answers(model: Any, prompts: Sequence[str], cfg: DataConfig, *, direction: "Tensor | None" = None,
             cache: "GenerationCache | None" = None, model_sum: str = "") -> tuple[list[str], list[bool]]:
    """:func:`_generate` with the direction ablated when one is given, through ``cache`` when one is given."""
    from drtk.interventions import ablation

    def make(todo: list[int]) -> list[tuple[str, bool]]:
        with ablation(model, direction) if direction is not None else nullcontext():
            texts, done = _generate(model, [prompts[i] for i in todo], cfg)
        return list(zip(texts, done))

    cache = cache if cache is not None else GenerationCache()
    entries = cache.fetch([GenerationCache.key(model_sum, direction, cfg.max_response_tokens, p) for p in prompts], make)
    return [t for t, _ in entries], [c for _, c in entries]


def build_training_set(
    model: Any,
    *,
    harmful: Sequence[str],
    harmless: Sequence[str] = (),
    borderline: Sequence[str] = (),
    config: "DataConfig | None" = None,
    direction: "Tensor | None" = None,
    harmful_answers: "Sequence[str] | None" = None,
    harmful_categories: "Sequence[str | None] | None" = None,
    cache: "GenerationCache | None" = None,
    direction_layer: "int | None" = None,
    direction_position: int = -1,
) -> TrainingSet:
    """Build the examples of a run with the model's own generations (see the module docstring).

    Args:
        model: the model before training (a :class:`~drtk.models.ChatModel`).
        harmful: prompts to refuse. harmless, borderline: prompts to keep answering.
        config: a :class:`DataConfig`.
        direction: the refusal direction, for ``prefix_source="ablated"`` recovery prefixes and for answering
            the benign prompts the model refuses (it answers them itself with the direction ablated).
        harmful_answers: harmful answers from a user's dataset, one per harmful prompt (recovery prefixes
            are cut from these instead of generated).
        harmful_categories: each harmful prompt's category (as in the shipped sets), so a shipped refusal
            fits its topic; None: general refusals only.
        cache: a :class:`GenerationCache`: generations found there are reused, new ones added (call its
            ``save()`` to keep them).
        direction_layer, direction_position: where ``direction`` was found (for ``hard_benign``).

    Returns:
        A :class:`TrainingSet` with both loss groups.
    """
    from drtk.judges import is_refusal, no_answer

    cfg = config or DataConfig()
    harmful, harmless, borderline = list(harmful), list(harmless), list(borderline)
    if not harmful or not (harmless or borderline):
        raise DataError(
            f"build_training_set got {len(harmful)} harmful and {len(harmless) + len(borderline)} benign prompts; "
            "both sides are needed (harmful prompts to refuse, harmless/borderline prompts to keep answering)"
        )
    rng = random.Random(cfg.seed)
    categories = list(harmful_categories) if harmful_categories is not None else [None] * len(harmful)
    _same_length(harmful, categories, "harmful_categories")
    if cfg.hard_benign and (direction is None or direction.ndim != 1 or direction_layer is None):
        raise ConfigError("DataConfig.hard_benign needs a single direction and its layer (direction=, direction_layer=)")
    gen = partial(_answers, model, cfg=cfg, cache=cache, model_sum=weights_checksum(model) if cache else "")

    def usable(answer: str) -> bool:
        return not no_answer(answer) and repeated_share(answer) <= cfg.max_repeated
    examples: list[Example] = []
    for kind, prompts in (("helpful", harmless), ("borderline", borderline)):
        if prompts:
            answers, complete = gen(prompts)
            refused = [i for i, a in enumerate(answers) if no_answer(a)]
            if refused and direction is not None:
                # A benign prompt the model refuses is over-refusal to unlearn: with the refusal direction
                # ablated the model answers it itself, and that answer becomes the target.
                again, done = gen([prompts[i] for i in refused], direction=direction)
                for i, a, c in zip(refused, again, done):
                    answers[i], complete[i] = a, c
                logger.info("%s: %d refused prompts answered again with the direction ablated", kind, len(refused))
            # an empty or blank answer teaches nothing; the model's own refusal of a benign prompt teaches over-refusal
            keep = [i for i, a in enumerate(answers) if usable(a)]
            if len(keep) < len(prompts):
                logger.info("%s: dropped %d empty, refusing or looping answers", kind, len(prompts) - len(keep))
            found = helpful_examples([prompts[i] for i in keep], [answers[i] for i in keep], kind=kind,
                                     complete=[complete[i] for i in keep])
            examples += found * (cfg.borderline_repeat if kind == "borderline" else 1)
    if cfg.hard_benign:
        examples += _hardest(model, examples, cfg, direction, direction_layer, direction_position)

    def refusals_for(cats: "Sequence[str | None]") -> list[str]:
        return [cfg.refusal_text] * len(cats) if cfg.refusal_text is not None else shipped_refusals(cats, rng)

    refusals = refusals_for(categories)
    own_style = cfg.refusal_source != "shipped" and cfg.refusal_text is None
    plain_answers: "list[str] | None" = None
    if own_style or (cfg.recovery and harmful_answers is None and cfg.prefix_source == "plain"):
        plain_answers, plain_complete = gen(harmful)
    if own_style and plain_answers is not None:
        own = [i for i, a in enumerate(plain_answers) if is_refusal(a) and plain_complete[i]]
        for i in own:
            refusals[i] = plain_answers[i]
        logger.info("refusals: %d in the model's own style, %d shipped", len(own), len(harmful) - len(own))
    examples += refusal_examples(harmful, refusals)

    if cfg.recovery:
        if harmful_answers is not None:
            answers = list(harmful_answers)
        elif cfg.prefix_source == "ablated":
            if direction is None:
                raise ConfigError(
                    "DataConfig.prefix_source='ablated' needs a direction (or pass harmful_answers=, or use "
                    "prefix_source='plain' for a model that still answers harmful prompts)"
                )
            answers, _ = gen(harmful, direction=direction)
        else:
            answers = plain_answers or []
        keep = [i for i, a in enumerate(answers) if usable(a)]
        logger.info("recovery: %d of %d harmful answers usable as prefixes (not empty, refusing or looping)",
                    len(keep), len(harmful))
        rec_refusals = refusals_for([categories[i] for i in keep])
        examples += recovery_examples(
            [harmful[i] for i in keep], [answers[i] for i in keep], rec_refusals,
            tokenizer=model.tokenizer, k_range=cfg.recovery_tokens, seed=cfg.seed, joiner=cfg.recovery_joiner,
        )
    if cache is not None and cache.hits:
        logger.info("generations: %d reused from %s", cache.hits, cache.path or "the cache")
    return TrainingSet(tuple(examples)).require_groups()


def _hardest(model: Any, benign: Sequence[Example], cfg: DataConfig, direction: Tensor, layer: int,
             position: int) -> list[Example]:
    """The extra copies of the benign examples whose prompts project highest on the refusal direction."""
    from drtk.directions.candidates import projections_by_layer

    prompts = list(dict.fromkeys(e.prompt for e in benign))
    if not prompts:
        return []
    proj = projections_by_layer(model, prompts, direction, position=position)[:, layer]
    top = proj.topk(max(1, round(cfg.hard_benign * len(prompts))))
    hard = {prompts[i] for i in top.indices.tolist()}
    logger.info("hard benign: %d of %d prompts (projection >= %.2f) get %d extra copies", len(hard), len(prompts),
                float(top.values.min()), cfg.hard_benign_repeat)
    once = list({e.prompt: e for e in benign if e.prompt in hard}.values())
    return once * cfg.hard_benign_repeat


# -- encoding --------------------------------------------------------------------------------------------
def end_of_turn_ids(model: Any) -> list[int]:
    """Token ids that close an assistant turn in this model's template (e.g. ``<|im_end|>``)."""
    tok = model.tokenizer
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tok.apply_chat_template(msgs, tokenize=False)
        tail = text.split(_SENTINEL, 1)[1]
    except Exception:  # templates that cannot render an assistant turn: fall back to EOS
        tail = ""
    ids = tok(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
    specials = set(tok.all_special_ids)
    for i, t in enumerate(ids):
        if t in specials:
            return ids[: i + 1]
    return [tok.eos_token_id]


@dataclass(frozen=True)
class Encoded:
    """One example as token ids: ``ids[:response_start]`` is the prompt, ``ids[response_start:loss_start]``
    the unlearned prefix, ``ids[loss_start:]`` the learned response."""

    ids: tuple[int, ...]
    response_start: int
    loss_start: int
    group: int  # index into GROUPS
    contrast: tuple[tuple[int, int], ...] = ()  # (column, token): a refusal's token to make unlikely there
    transition: tuple[tuple[int, int], ...] = ()  # (column, token): a refusal's opening to make likely there


def encode_example(model: Any, ex: Example, *, max_response_tokens: int, eot: Sequence[int]) -> Encoded:
    tok = model.tokenizer
    prompt = tok(model.chat.format(ex.prompt), add_special_tokens=False)["input_ids"]
    prefix = tok(ex.prefix, add_special_tokens=False)["input_ids"] if ex.prefix else []
    response = tok(ex.response, add_special_tokens=False)["input_ids"]
    cut = len(response) > max_response_tokens
    response = response[:max_response_tokens] + ([] if cut or not ex.complete else list(eot))
    if not response:
        raise DataError(f"example for prompt {ex.prompt[:60]!r} has an empty response")
    ids = prompt + prefix + response
    return Encoded(tuple(ids), len(prompt), len(prompt) + len(prefix), GROUPS.index(ex.group))


def with_contrast(enc: Encoded, refusals: Sequence[Sequence[int]], *, depth: int = 0) -> Encoded:
    """``enc`` with its contrast targets: for each refusal (token ids), the column where the learned
    response first departs from it and the refusal's token there. A refusal the response follows to its
    end gives none.

    With ``depth``, also each refusal's opening token at every column of the response's first ``depth``
    tokens where the response does not itself continue with that token: a model taught to refuse after
    a harmful prefix (recovery examples) must not break off a helpful answer the same way.
    """
    response = enc.ids[enc.loss_start:]
    pairs = set()
    for r in refusals:
        d = next((i for i, (a, b) in enumerate(zip(response, r)) if a != b), None)
        if d is not None:
            pairs.add((enc.loss_start + d, int(r[d])))
    for opener in {int(r[0]) for r in refusals if len(r)}:
        pairs.update((enc.loss_start + d, opener) for d in range(1, min(depth, len(response)))
                     if response[d] != opener)
    return replace(enc, contrast=tuple(sorted(pairs)))


def contrast_overlap(encoded: Sequence[Encoded]) -> dict[int, int]:
    """For each token the refusal contrast lowers, how many benign answers write that token themselves
    (elsewhere in their learned text: never at a column where it is lowered). The model can learn to avoid
    the token there too: on the embedded model a refusal opening with "I" took the "I" after a letter's
    "Dear …,\n\n" and left the letter looping (docs/training.md, "What the refusal contrast costs")."""
    benign = GROUPS.index("benign")
    lowered = {t for e in encoded for _, t in e.contrast}
    counts = dict.fromkeys(sorted(lowered), 0)
    for e in encoded:
        if e.group == benign:
            for t in lowered.intersection(e.ids[e.loss_start:]):
                counts[t] += 1
    return counts


def with_transitions(enc: Encoded, tokenizer: Any) -> Encoded:
    """``enc`` with its transition targets: for an example with a harmful prefix (recovery), the refusal's
    first non-blank token at every column inside the prefix (after its first token), so the model learns to
    turn to the refusal at any depth of a harmful answer, not only where the prefix was cut (the reinforced
    transition of Yuan et al. 2024). A benign example, or one without a prefix, gets none."""
    if enc.group != GROUPS.index("harmful") or enc.loss_start - enc.response_start < 2:
        return replace(enc, transition=())
    opener = next((t for t in enc.ids[enc.loss_start:] if tokenizer.decode([t]).strip()), None)
    if opener is None:
        return replace(enc, transition=())
    return replace(enc, transition=tuple((col, opener) for col in range(enc.response_start + 1, enc.loss_start)))


@dataclass
class TrainBatch:
    """A padded batch. ``labels`` are -100 except learned response tokens; ``response_start`` is each
    row's first assistant-turn column in padded coordinates (for the ablation region); ``contrast_col``
    and ``contrast_token`` the contrast targets, ``transition_col`` and ``transition_token`` the transition
    targets (padded columns; -1 where a row has fewer)."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    labels: Int[Tensor, "batch pos"]
    response_start: Int[Tensor, "batch"]
    group: Int[Tensor, "batch"]
    contrast_col: Int[Tensor, "batch k"]
    contrast_token: Int[Tensor, "batch k"]
    transition_col: Int[Tensor, "batch j"]
    transition_token: Int[Tensor, "batch j"]

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def to(self, device: "torch.device | str") -> "TrainBatch":
        return TrainBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def collate(items: Sequence[Encoded], *, pad_id: int, padding_side: str = "left") -> TrainBatch:
    """Pad encoded examples into a :class:`TrainBatch` (left or right padding)."""
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    T = max(len(e.ids) for e in items)
    B = len(items)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    start = torch.zeros(B, dtype=torch.long)
    offsets = [T - len(e.ids) if padding_side == "left" else 0 for e in items]
    c_col, c_tok = _targets(items, "contrast", offsets)
    t_col, t_tok = _targets(items, "transition", offsets)
    for b, (e, off) in enumerate(zip(items, offsets)):
        ids = torch.tensor(e.ids, dtype=torch.long)
        input_ids[b, off : off + len(ids)] = ids
        attn[b, off : off + len(ids)] = 1
        labels[b, off + e.loss_start : off + len(ids)] = ids[e.loss_start :]
        start[b] = off + e.response_start
    return TrainBatch(input_ids, attn, labels, start, torch.tensor([e.group for e in items], dtype=torch.long),
                      c_col, c_tok, t_col, t_tok)


def _targets(items: Sequence[Encoded], name: str, offsets: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Each row's (column, token) targets of field ``name`` in padded columns (its padding offset added),
    -1 columns where it has fewer."""
    K = max(len(getattr(e, name)) for e in items)
    cols = torch.full((len(items), K), -1, dtype=torch.long)
    toks = torch.zeros((len(items), K), dtype=torch.long)
    for b, (e, off) in enumerate(zip(items, offsets)):
        for k, (col, tok) in enumerate(getattr(e, name)):
            cols[b, k], toks[b, k] = off + col, tok
    return cols, toks


def loss_mask(batch: TrainBatch) -> Bool[Tensor, "batch pos"]:
    """Where the loss is taken (the learned response tokens)."""
    return batch.labels != -100
