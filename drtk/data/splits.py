"""Deterministic, disjoint, category-stratified splits of a `PromptSet`.

The refusal-direction pipeline needs prompts that never meet twice: one part to fit candidate
directions, one to train, one to select/validate, one held out for the final evaluation. Splits here are
a pure function of (set content, fractions, seed):

- each prompt's place is decided by a hash of (seed, normalized prompt), so the input order does not
  matter and no global random state is read or written;
- prompts that normalize to the same text form one unit and always land in the same split;
- within each category the units are ordered by hash and cut by the fractions (largest-remainder
  rounding), so every split keeps the category mix. Categories with fewer prompts than there are
  splits are pooled and cut together.

Example:
    >>> splits = split_prompts(load_prompts("harmful"), seed=0)  # doctest: +SKIP
    >>> sorted(splits)  # doctest: +SKIP
    ['fit', 'test', 'train', 'val']
"""

import hashlib
import math
from collections.abc import Mapping
from types import MappingProxyType

from drtk.data.loading import load_prompts
from drtk.data.prompt_set import PromptSet, normalize_prompt
from drtk.errors import ConfigError

DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType({"fit": 0.4, "train": 0.3, "val": 0.1, "test": 0.2})


def split_prompts(
    ps: PromptSet, *, fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, PromptSet]:
    """Split `ps` into disjoint parts that together hold every prompt.

    Args:
        ps: the set to split.
        fractions: split name -> fraction of the prompts; each positive, summing to 1 (within 1e-6).
        seed: changes the assignment; the same (content, fractions, seed) always gives the same splits.

    Returns:
        Split name -> `PromptSet` named "<ps.name>:<split>", prompts in their original order. A split may
        be empty when `ps` is tiny; use `PromptSet.require_nonempty` where that matters.
    """
    names = _check_fractions(fractions)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an int, got {seed!r}.")
    units: dict[str, list[int]] = {}  # normalized prompt -> indices of its copies
    for i, prompt in enumerate(ps.prompts):
        units.setdefault(normalize_prompt(prompt), []).append(i)
    strata: dict[str, list[str]] = {}
    for key, idx in units.items():
        strata.setdefault(ps.categories[idx[0]], []).append(key)
    groups = [keys for keys in strata.values() if len(keys) >= len(names)]
    pooled = [k for keys in strata.values() if len(keys) < len(names) for k in keys]
    groups += [pooled] if pooled else []

    chosen: dict[str, list[int]] = {n: [] for n in names}
    weights = [float(fractions[n]) for n in names]
    for keys in groups:
        keys = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).digest())
        start = 0
        for split, count in zip(names, _allocate(len(keys), weights)):
            for key in keys[start : start + count]:
                chosen[split].extend(units[key])
            start += count
    return {n: ps.subset(sorted(chosen[n]), name=f"{ps.name}:{n}") for n in names}


def standard_splits(name: str, seed: int = 0) -> dict[str, PromptSet]:
    """Load set `name` (see `load_prompts`) and split it with the default fractions.

    Args:
        name: e.g. "harmful", "harmless", "borderline".
        seed: split seed.

    Returns:
        {"fit": 40%, "train": 30%, "val": 10%, "test": 20%} as `PromptSet`s.
    """
    return split_prompts(load_prompts(name), seed=seed)


def _check_fractions(fractions: Mapping[str, float]) -> list[str]:
    if not isinstance(fractions, Mapping) or not fractions:
        raise ConfigError(f"fractions must be a non-empty mapping of split name to fraction, got {fractions!r}.")
    for split, frac in fractions.items():
        if not isinstance(split, str) or not split:
            raise ConfigError(f"fractions has key {split!r}; split names must be non-empty strings.")
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not math.isfinite(frac) or frac <= 0:
            raise ConfigError(f"fractions[{split!r}] = {frac!r}; every fraction must be a positive finite number.")
    total = math.fsum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"fractions {dict(fractions)} sum to {total:.6g}, not 1; rescale them so they sum to 1.")
    return list(fractions)


def _allocate(n: int, weights: list[float]) -> list[int]:
    """Split `n` items by `weights` (summing to 1) with largest-remainder rounding; ties go to earlier splits."""
    exact = [w * n for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in by_remainder[: n - sum(counts)]:
        counts[j] += 1
    return counts
