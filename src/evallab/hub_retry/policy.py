"""The retry policy of hub calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_RETRY", "HubRetry", "RepoType"]

RepoType = Literal["model", "dataset"]


@dataclass(frozen=True)
class HubRetry:
    """How a hub call is retried on a transient failure.

    With the defaults, one call against a hub that is down fails within about 11 s: at most 3
    attempts of at most :data:`evallab.hub.CONNECT_TIMEOUT_S` (3 s) each, 0.5 s then 1 s apart
    (a refused connection: about 2 s in all); a server that accepts but stays silent is tried
    once, for :data:`evallab.hub.READ_TIMEOUT_S` (10 s).

    Attributes:
        attempts: Attempts in all (1: no retry).
        budget_s: No new attempt starts once it would begin this many seconds after the first.
        first_wait_s: Pause before the first retry; it doubles for each next one.
        max_wait_s: Longest pause between attempts.
        retry_after_cap_s: Longest ``Retry-After`` honoured (a longer one is cut to this).
    """

    attempts: int = 3
    budget_s: float = 8.0
    first_wait_s: float = 0.5
    max_wait_s: float = 2.0
    retry_after_cap_s: float = 5.0


DEFAULT_RETRY = HubRetry()
