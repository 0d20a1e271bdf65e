"""The bounded retry policy of the ESI client, expressed for tenacity.

Two budgets per request:

* **transient** failures (5xx, timeouts, connection errors, truncated or undecodable JSON)
  get ``max_attempts`` attempts in all, with exponential backoff and jitter;
* **rate-limited** answers (420, 429) are waited out as ESI says and retried, at most
  ``max_rate_limited`` times, without eating into the transient budget.

A ``Retry-After`` always beats our own backoff. Anything else (a 4xx) is never retried:
the attempt raises the final error itself and tenacity lets it through.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tenacity import RetryCallState

RetryKind = Literal["transient", "rate_limited"]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before it gives up with ``EsiUnavailable``."""

    max_attempts: int = 4
    max_rate_limited: int = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_wait_s: float = 900.0
    fallback_wait_s: float = 60.0  # a 420/429 without any wait header: one error-limit window


class RetrySignal(Exception):
    """Raised inside an attempt to ask for another one; never leaves the client."""

    def __init__(
        self,
        kind: RetryKind,
        detail: str,
        *,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.status = status


def backoff_s(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never zero."""
    ceiling_s = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0 ** max(0, attempt - 1))
    return ceiling_s / 2 + rand() * ceiling_s / 2


class RetryBudget:
    """The per-request state tenacity consults: counts, wait and stop decisions."""

    def __init__(self, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.transient = 0
        self.rate_limited = 0
        self._rand = rand

    @staticmethod
    def signal_of(state: RetryCallState) -> RetrySignal | None:
        outcome = state.outcome
        exc = None if outcome is None else outcome.exception()
        return exc if isinstance(exc, RetrySignal) else None

    def count(self, state: RetryCallState) -> None:
        """tenacity ``after`` hook: runs first after each failed attempt."""
        signal = self.signal_of(state)
        if signal is None:
            return
        if signal.kind == "transient":
            self.transient += 1
        else:
            self.rate_limited += 1

    def wait(self, state: RetryCallState) -> float:
        signal = self.signal_of(state)
        if signal is not None and signal.retry_after_s is not None:
            return signal.retry_after_s
        return backoff_s(self.transient, self.policy, self._rand)

    def stop(self, state: RetryCallState) -> bool:
        signal = self.signal_of(state)
        if signal is None:
            return True
        if signal.retry_after_s is not None and signal.retry_after_s > self.policy.max_wait_s:
            return True
        if signal.kind == "transient":
            return self.transient >= self.policy.max_attempts
        return self.rate_limited > self.policy.max_rate_limited
