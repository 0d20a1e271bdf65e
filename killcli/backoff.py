"""How long to wait before trying again: one bounded, jittered backoff for every caller.

The ESI and SSO clients, webhook posts, the job queues' retries, RabbitMQ reconnects and
the sync engine's pending bodies all wait by this one formula, exponential backoff with
"equal jitter". After the ``n``-th failure (1-based; 0 counts as 1)::

    ceiling(n) = min(cap_s, initial_s * 2 ** (n - 1))
    wait(n)    = ceiling(n) / 2 + rand() * ceiling(n) / 2        rand() in [0, 1)

so a wait is never zero, never more than ``cap_s``, grows steadily, and callers that
failed together (ESI downtime) come back spread out instead of in one burst.

A wait the other side asked for (``Retry-After``, a 420's error-window reset, a webhook's
``retry_after``, a job handler's own delay) wins over the formula, bounded too: it is
clamped to ``[0, max_server_s]``, the way :func:`killcli.esi.headers.parse_error_reset`
caps a reset at one error window. What each caller does with a wait beyond its bound (ESI
gives up, the others wait the bound) stays the caller's decision.

The callers that retry a call in place run it under tenacity: :func:`tenacity_wait` is this
backoff as a tenacity ``wait=``. Those that schedule a retry for later (a queued job, a
pending body) call :meth:`Backoff.wait_s` themselves.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState

Rand = Callable[[], float]  # uniform in [0, 1), like random.random
ServerWait = Callable[[RetryCallState], float | None]
MAX_DOUBLINGS = 60  # 2**60 times any initial wait is past every cap; keeps floats finite


@dataclass(frozen=True)
class Backoff:
    """The bounds of one caller's backoff (see the module docstring for the formula)."""

    initial_s: float
    cap_s: float
    max_server_s: float = math.inf  # bound on a wait the server (or handler) asked for

    def __post_init__(self) -> None:
        if not 0 <= self.initial_s <= self.cap_s or self.max_server_s < 0:
            raise ValueError(f"invalid backoff {self}")

    def ceiling_s(self, failures: int) -> float:
        """The longest wait after the ``failures``-th failure: doubling, up to ``cap_s``."""
        doublings = min(max(failures, 1) - 1, MAX_DOUBLINGS)
        return min(self.cap_s, self.initial_s * 2.0**doublings)

    def wait_s(
        self, failures: int, rand: Rand = random.random, *, server_s: float | None = None
    ) -> float:
        """The wait after the ``failures``-th failure: the server's, bounded, when given;
        else between half and all of :meth:`ceiling_s`, jittered by ``rand``."""
        if server_s is not None:
            return self.bounded_s(server_s)
        ceiling = self.ceiling_s(failures)
        return ceiling / 2 + rand() * ceiling / 2

    def bounded_s(self, server_s: float) -> float:
        """A wait the server asked for, within ``[0, max_server_s]`` (NaN counts as 0)."""
        if math.isnan(server_s):
            return 0.0
        return min(max(0.0, server_s), self.max_server_s)


def tenacity_wait(
    backoff: Backoff, rand: Rand = random.random, server_s: ServerWait | None = None
) -> Callable[[RetryCallState], float]:
    """``backoff`` as a tenacity ``wait=``: the attempt number counts the failures, and
    ``server_s`` (when given) reads the wait the failed attempt's answer asked for."""

    def wait(state: RetryCallState) -> float:
        hint = None if server_s is None else server_s(state)
        return backoff.wait_s(state.attempt_number, rand, server_s=hint)

    return wait
