"""Statistics for attack success and refusal rates: Wilson intervals and paired model comparisons.

The Wilson score interval (Wilson, 1927) for ``k`` successes in ``n`` trials at normal quantile ``z``::

    centre = (p + z^2 / 2n) / (1 + z^2 / n),  half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2 / n)

It stays inside [0, 1] and is sensible at 0/n and n/n, where the textbook Wald interval collapses.

Two models judged on the same prompts give paired outcomes. Only the discordant pairs carry
information: ``b`` prompts where only model A succeeded, ``c`` where only B did. McNemar's exact test
is the two-sided binomial test of ``b`` against Binomial(b + c, 1/2); the difference of rates is
``(b - c) / n`` with a Wald interval on the paired difference (Agresti & Min), clipped to [-1, 1].
"""

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with its 95% Wilson interval."""

    k: int
    n: int
    rate: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.rate:.1%} [{self.ci_low:.1%}, {self.ci_high:.1%}] (n={self.n})"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (``(nan, nan)`` when ``n == 0``)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def counted(k: int, n: int) -> Rate:
    """``k`` of ``n`` as a rate with its Wilson interval (nan when ``n == 0``)."""
    return Rate(k, n, k / n if n else float("nan"), *wilson_interval(k, n))


def rate(outcomes: Sequence[bool]) -> Rate:
    """The share of True outcomes with its Wilson interval."""
    return counted(int(sum(bool(x) for x in outcomes)), len(outcomes))


def pooled_over_refusal(results: "dict[str, Any]") -> "Rate | None":
    """Over-refusal over every benign set of a ``results.json`` document together (e.g. harmless and
    borderline), as one rate with its interval; None when the document has none."""
    sets = (results.get("over_refusal") or {}).values()
    k, n = sum(int(s["k"]) for s in sets), sum(int(s["n"]) for s in sets)
    return None if n == 0 else counted(k, n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """Model A vs model B on the same prompts (success = attack succeeded / prompt refused, as given)."""

    n: int
    rate_a: float
    rate_b: float
    only_a: int
    only_b: int
    diff: float
    diff_low: float
    diff_high: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> PairedComparison:
    """Compare paired outcomes: difference ``rate_a - rate_b`` with an interval, and McNemar's exact p."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired outcomes need equal, non-zero lengths; got {len(a)} and {len(b)}")
    n = len(a)
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    diff = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    return PairedComparison(n, sum(map(bool, a)) / n, sum(map(bool, b)) / n, only_a, only_b, diff,
                            max(-1.0, diff - z * se), min(1.0, diff + z * se), mcnemar_exact(only_a, only_b))
