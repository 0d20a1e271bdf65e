"""One webhook POST: bounded retries, rate limits, and an answer in plain words.

What each answer means (Discord and Slack agree on the status codes that matter):

=====================  ===============================================================
2xx                    posted; ``X-RateLimit-Remaining: 0`` asks to wait
                       ``X-RateLimit-Reset-After`` seconds before the next post
429                    rate limited: wait ``retry_after`` (JSON, seconds) or
                       ``Retry-After``; never retried here, the caller records the wait
401 403 404 410        the webhook is gone (deleted, revoked, channel archived)
other 4xx              this message was rejected (too long, malformed): skip it
5xx, network errors    retried with capped exponential backoff and jitter, then given up
=====================  ===============================================================

Details never contain the URL (it is the webhook's secret): only status codes and
exception class names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt

from killcli.backoff import Backoff, tenacity_wait
from killcli.esi.transport import tls_context

GONE_STATUSES = frozenset({401, 403, 404, 410})
DEFAULT_RETRY_AFTER_S = 5.0  # a 429 without any hint still must not be hammered
CONNECT_TIMEOUT_S = 5.0
TIMEOUT_S = 15.0


class PostStatus(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate-limited"
    GONE = "gone"
    REJECTED = "rejected"
    FAILED = "failed"  # 5xx or network, after the retries


@dataclass(frozen=True)
class PostResult:
    """The outcome of one post; ``wait_s`` is how long the webhook must rest now."""

    status: PostStatus
    detail: str = ""
    wait_s: float | None = None
    attempts: int = 1


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying 5xx and network errors, and on waits the server asks for."""

    attempts: int = 3
    backoff_s: float = 0.5
    backoff_cap_s: float = 4.0
    cooldown_s: float = 60.0  # rest after the retries are spent
    max_wait_s: float = 900.0  # cap on any Retry-After we obey

    @property
    def backoff(self) -> Backoff:
        """Between the retries of one post: a 5xx's ``Retry-After`` wins, but no wait
        (the server's or ours) exceeds ``backoff_cap_s``."""
        return Backoff(self.backoff_s, self.backoff_cap_s, max_server_s=self.backoff_cap_s)


DEFAULT_POLICY = RetryPolicy()


def make_client(*, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The shared client for webhook posts, with explicit timeouts and no redirects
    (a redirect would carry the secret URL's body somewhere else)."""
    return httpx.Client(
        timeout=httpx.Timeout(TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        follow_redirects=False,
        transport=transport,
        verify=tls_context(),
        headers={"User-Agent": "killsync (webhooks)"},
    )


def _seconds(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def retry_after_s(response: httpx.Response, policy: RetryPolicy) -> float:
    """A 429's wait: JSON ``retry_after`` (precise), else ``Retry-After``, else
    ``X-RateLimit-Reset-After``, else a default; capped by the policy."""
    candidates = (
        _json(response).get("retry_after"),
        response.headers.get("retry-after"),
        response.headers.get("x-ratelimit-reset-after"),
    )
    for value in candidates:
        seconds = None if value is None else _seconds(value)
        if seconds is not None:
            return min(seconds, policy.max_wait_s)
    return DEFAULT_RETRY_AFTER_S


def bucket_wait_s(response: httpx.Response, policy: RetryPolicy) -> float | None:
    """After a success: the wait until the bucket refills when it is empty, else None."""
    if response.headers.get("x-ratelimit-remaining") != "0":
        return None
    reset = _seconds(response.headers.get("x-ratelimit-reset-after", ""))
    return None if reset is None else min(reset, policy.max_wait_s)


def classify(response: httpx.Response, policy: RetryPolicy) -> PostResult:
    """What one response means (see the module docstring)."""
    status = response.status_code
    if 200 <= status < 300:
        return PostResult(PostStatus.OK, f"HTTP {status}", bucket_wait_s(response, policy))
    if status == 429:
        return PostResult(
            PostStatus.RATE_LIMITED, "HTTP 429 rate limited", retry_after_s(response, policy)
        )
    if status in GONE_STATUSES:
        return PostResult(PostStatus.GONE, f"HTTP {status}: webhook deleted or not allowed")
    if 400 <= status < 500:
        return PostResult(PostStatus.REJECTED, f"HTTP {status}: message rejected")
    hint = _seconds(response.headers.get("retry-after", ""))
    return PostResult(
        PostStatus.FAILED, f"HTTP {status}", None if hint is None else min(hint, policy.max_wait_s)
    )


def _post_once(
    http: httpx.Client, url: str, body: Mapping[str, Any], policy: RetryPolicy
) -> PostResult:
    try:
        response = http.post(url, json=body)
    except httpx.TransportError as exc:
        # str(exc) may quote the URL; the class name says enough.
        return PostResult(PostStatus.FAILED, f"network error: {type(exc).__name__}")
    return classify(response, policy)


def _hint_s(state: RetryCallState) -> float | None:
    """The wait a failed post's answer asked for (its ``Retry-After``), if any."""
    result = state.outcome.result() if state.outcome else None
    return result.wait_s if isinstance(result, PostResult) else None


def post_message(
    http: httpx.Client,
    url: str,
    body: Mapping[str, Any],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> PostResult:
    """POST ``body`` as JSON, retrying only 5xx and network errors, at most
    ``policy.attempts`` times. After the last failure ``wait_s`` is the cool-down."""
    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=tenacity_wait(policy.backoff, server_s=_hint_s),
        retry=retry_if_result(lambda r: r.status is PostStatus.FAILED),
        sleep=sleep,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        reraise=True,
    )
    attempts = 0

    def attempt() -> PostResult:
        nonlocal attempts
        attempts += 1
        return _post_once(http, url, body, policy)

    result: PostResult = retrying(attempt)
    if result.status is PostStatus.FAILED:
        rest = max(policy.cooldown_s, result.wait_s or 0.0)
        return PostResult(PostStatus.FAILED, result.detail, rest, attempts)
    return PostResult(result.status, result.detail, result.wait_s, attempts)
