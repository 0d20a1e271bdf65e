"""Parsing the response headers ESI drives us with.

Every function here is pure and tolerant: a header that is absent or malformed parses to
``None`` so that one odd response cannot crash a sync; the caller decides what a missing
value means.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A wait ESI asks for never outlasts its window: the error limit's is 60 s, a bucket's 15
# minutes. A larger value (a broken proxy, a hostile answer) is read as one window, so one
# header cannot stop a worker, or through the shared ledger a whole egress, for good.
ERROR_WINDOW_S = 60
MAX_RETRY_AFTER_S = 900.0

_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([smh])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_limit(value: str | None) -> tuple[int, float] | None:
    """``"3600/15m"`` -> ``(3600, 900.0)``: tokens per window and the window in seconds."""
    if value is None:
        return None
    match = _LIMIT_RE.match(value)
    if match is None:
        return None
    tokens, length, unit = match.groups()
    window_s = int(length) * _UNIT_S[unit]
    return (int(tokens), window_s) if window_s > 0 else None


def parse_int(value: str | None) -> int | None:
    """An integer header such as ``X-Pages`` or ``X-Ratelimit-Remaining``."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def parse_http_date(value: str | None) -> datetime | None:
    """An RFC 7231 date (``Expires``, ``Last-Modified``) as a UTC-aware datetime."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """``Retry-After`` in seconds, given as a number of seconds or as an HTTP date."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        when = parse_http_date(value)
        if when is None:
            return None
        seconds = (when - now).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def parse_error_reset(value: str | None) -> int | None:
    """``X-ESI-Error-Limit-Reset``: seconds to the error window's reset, at most one
    window (see :data:`ERROR_WINDOW_S`)."""
    seconds = parse_int(value)
    return None if seconds is None else min(max(0, seconds), ERROR_WINDOW_S)


@dataclass(frozen=True)
class RateLimitInfo:
    """The ``X-Ratelimit-*`` headers of one response (all ``None`` on routes without)."""

    group: str | None
    limit_tokens: int | None
    window_s: float | None
    remaining: int | None
    used: int | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo:
        limit = parse_limit(headers.get("x-ratelimit-limit"))
        group = (headers.get("x-ratelimit-group") or "").strip() or None
        return cls(
            group=group,
            limit_tokens=None if limit is None else limit[0],
            window_s=None if limit is None else limit[1],
            remaining=parse_int(headers.get("x-ratelimit-remaining")),
            used=parse_int(headers.get("x-ratelimit-used")),
        )


@dataclass(frozen=True)
class ErrorLimitInfo:
    """The ``X-ESI-Error-Limit-*`` headers: errors left and seconds to the window reset."""

    remain: int | None
    reset_s: int | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> ErrorLimitInfo:
        return cls(
            remain=parse_int(headers.get("x-esi-error-limit-remain")),
            reset_s=parse_error_reset(headers.get("x-esi-error-limit-reset")),
        )


def token_cost(status: int) -> int:
    """What ESI charges a bucket for a response (documented table; 429 itself is free)."""
    if status == 429:
        return 0
    if 200 <= status < 300:
        return 2
    if 300 <= status < 400:
        return 1
    if 400 <= status < 500:
        return 5
    return 0
