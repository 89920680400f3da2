"""The unbiased pass@k estimator.

Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1:
``1 - C(n - c, k) / C(n, k)`` per problem, computed as a stable product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["pass_at_k", "pass_at_k_mean"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) passes.

    Args:
        n: Samples generated for the problem.
        c: Samples that passed.
        k: Samples drawn.

    Raises:
        ValueError: ``k > n``, ``c > n`` or a negative count.
    """
    if n < 0 or c < 0 or k < 1:
        raise ValueError(f"pass@k needs n >= 0, c >= 0, k >= 1; got n={n}, c={c}, k={k}")
    if c > n:
        raise ValueError(f"pass@k: c={c} correct samples out of n={n}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem; got n={n}")
    if n - c < k:
        return 1.0
    # prod_{i=n-c+1}^{n} (1 - k/i) == C(n-c, k) / C(n, k), without huge binomials.
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_mean(counts: Sequence[tuple[int, int]], k: int) -> tuple[float, float | None]:
    """Mean pass@k over problems and its standard error.

    Args:
        counts: ``(n, c)`` per problem.
        k: Samples drawn.

    Returns:
        (mean, stderr); stderr is None with fewer than two problems.
    """
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        return 0.0, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))
