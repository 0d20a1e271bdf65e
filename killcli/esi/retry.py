"""The bounded retry policy of the ESI client, expressed for tenacity.

Two budgets per request:

* **transient** failures (5xx, timeouts, connection errors, truncated or undecodable JSON)
  get ``max_attempts`` attempts in all, with the shared backoff (:mod:`killcli.backoff`);
* **rate-limited** answers (420, 429) are waited out as ESI says and retried, at most
  ``max_rate_limited`` times, without eating into the transient budget.

A ``Retry-After`` always beats our own backoff; one longer than ``max_wait_s`` gives up
instead of waiting. Anything else (a 4xx) is never retried:
the attempt raises the final error itself and tenacity lets it through.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tenacity import RetryCallState

from killcli.backoff import Backoff

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

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_initial_s, self.backoff_max_s, max_server_s=self.max_wait_s)


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


class RetryBudget:
    """The per-request state tenacity consults: counts, wait and stop decisions."""

    def __init__(self, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._backoff = policy.backoff
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
        server_s = None if signal is None else signal.retry_after_s
        return self._backoff.wait_s(self.transient, self._rand, server_s=server_s)

    def stop(self, state: RetryCallState) -> bool:
        signal = self.signal_of(state)
        if signal is None:
            return True
        if signal.retry_after_s is not None and signal.retry_after_s > self.policy.max_wait_s:
            return True
        if signal.kind == "transient":
            return self.transient >= self.policy.max_attempts
        return self.rate_limited > self.policy.max_rate_limited
