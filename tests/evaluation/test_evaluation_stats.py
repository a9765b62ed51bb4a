import math

import pytest

from drtk.evaluation import mcnemar_exact, paired_comparison, pooled_over_refusal, rate, wilson_interval

Z = 1.959963984540054


def textbook_wilson(k, n):
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n,expected", [(5, 10, (0.2366, 0.7634)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)),
                                          (1, 20, (0.0089, 0.2361))])
def test_wilson_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4) and hi == pytest.approx(expected[1], abs=1e-4)
    assert (lo, hi) == pytest.approx(textbook_wilson(k, n), abs=1e-12)


def test_rate_and_errors():
    r = rate([True, False, True, True])
    assert (r.k, r.n, r.rate) == (3, 4, 0.75) and r.ci_low < 0.75 < r.ci_high
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mcnemar_and_paired_difference():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # two-sided binomial tail
    assert mcnemar_exact(3, 3) == 1.0
    a = [True] * 8 + [False] * 2
    b = [False] * 6 + [True] * 2 + [False] * 2
    c = paired_comparison(a, b)
    assert (c.only_a, c.only_b, c.n) == (6, 0, 10) and c.diff == pytest.approx(0.6)
    assert c.diff_low < 0.6 < c.diff_high and c.p_value == pytest.approx(2 / 64)
    with pytest.raises(ValueError):
        paired_comparison([True], [True, False])


def test_pooled_over_refusal_counts_every_benign_prompt_once():
    doc = {"over_refusal": {"harmless": {"k": 1, "n": 30, "rate": 1 / 30}, "borderline": {"k": 9, "n": 10, "rate": 0.9}}}
    r = pooled_over_refusal(doc)
    assert (r.k, r.n) == (10, 40) and r.rate == 0.25  # not the mean of the two rates (0.47)
    assert (r.ci_low, r.ci_high) == wilson_interval(10, 40)
    assert pooled_over_refusal({"over_refusal": {}}) is None and pooled_over_refusal({}) is None
