from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from evallab.analysis import stats
from evallab.analysis.stats import mcnemar_exact, mean_stderr, paired_bootstrap, paired_compare


def test_mcnemar_exact_known_values() -> None:
    a = np.array([0.0] * 10 + [1.0] * 5)
    b = np.array([1.0] * 10 + [1.0] * 5)
    p, a_only, b_only = mcnemar_exact(a, b)
    assert (a_only, b_only) == (0, 10)
    assert p == pytest.approx(2 * 0.5**10)
    p, _, _ = mcnemar_exact([1, 0, 1], [1, 0, 1])
    assert p == 1.0
    rng = np.random.default_rng(0)
    x, y = (rng.random(500) < 0.5).astype(float), (rng.random(500) < 0.55).astype(float)
    p, ao, bo = mcnemar_exact(x, y)
    assert p == pytest.approx(sps.binomtest(min(ao, bo), ao + bo, 0.5).pvalue)
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5], [1.0])
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact([1.0], [1.0, 0.0])


def test_stderr_matches_scipy() -> None:
    x = np.arange(10, dtype=float) ** 1.5
    assert mean_stderr(x) == pytest.approx(sps.sem(x))
    assert mean_stderr([3.0]) == 0.0


def test_bootstrap_ci_covers_the_difference_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random(5000) < 0.6).astype(float)
    b = a.copy()
    b[rng.choice(5000, 300, replace=False)] = 1.0
    r1 = paired_bootstrap(a, b, resamples=4000, seed=3)
    r2 = paired_bootstrap(a, b, resamples=4000, seed=3)
    assert r1 == r2
    assert r1.ci_low < r1.diff < r1.ci_high
    assert r1.diff == pytest.approx(b.mean() - a.mean())
    # Normal approximation of the paired difference's CI.
    se = (b - a).std(ddof=1) / np.sqrt(a.size)
    assert r1.ci_low == pytest.approx(r1.diff - 1.96 * se, abs=0.004)
    assert r1.ci_high == pytest.approx(r1.diff + 1.96 * se, abs=0.004)
    assert r1.p_value < 0.001
    same = paired_bootstrap(a, a, resamples=500)
    assert same.p_value == 1.0 and same.ci_low == same.ci_high == 0.0


def test_multinomial_shortcut_matches_index_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 5, 3000).astype(float)
    b = a + rng.integers(-1, 3, 3000)
    fast = paired_bootstrap(a, b, resamples=6000, seed=1)
    monkeypatch.setattr(stats, "_MULTINOMIAL_MAX_VALUES", 0)
    slow = paired_bootstrap(a, b, resamples=6000, seed=1)
    assert fast.diff == slow.diff
    assert fast.ci_low == pytest.approx(slow.ci_low, abs=0.01)
    assert fast.ci_high == pytest.approx(slow.ci_high, abs=0.01)


def test_paired_compare_picks_the_test() -> None:
    binary = paired_compare([0, 0, 1, 1] * 50, [1, 0, 1, 1] * 50, resamples=1000)
    assert binary.test == "mcnemar-exact" and binary.b_only == 50 and binary.a_only == 0
    assert binary.significant()
    cont = paired_compare([0.1, 0.2, 0.3] * 20, [0.15, 0.2, 0.35] * 20, resamples=1000)
    assert cont.test == "paired-bootstrap" and cont.diff == pytest.approx(1 / 30)
    with pytest.raises(ValueError, match="zero documents"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([np.nan], [1.0])
