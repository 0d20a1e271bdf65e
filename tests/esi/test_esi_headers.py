"""Header parsing, token costs, route templates and bucket owners."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import jwt
import pytest

from killcli.esi.headers import (
    ErrorLimitInfo,
    RateLimitInfo,
    parse_http_date,
    parse_limit,
    parse_retry_after,
    token_cost,
)
from killcli.esi.routes import character_of, route_of

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3600/15m", (3600, 900.0)),
        ("30/15m", (30, 900.0)),
        ("150/1h", (150, 3600.0)),
        ("10/30s", (10, 30.0)),
        (" 20 / 2m ", (20, 120.0)),
        ("3600/15", None),
        ("3600/15d", None),
        ("many/15m", None),
        ("10/0s", None),
        (None, None),
    ],
)
def test_parse_limit(text: str | None, expected: tuple[int, float] | None) -> None:
    assert parse_limit(text) == expected


def test_rate_limit_info_from_headers() -> None:
    headers = httpx.Headers(
        {
            "X-Ratelimit-Group": "killmail",
            "X-Ratelimit-Limit": "3600/15m",
            "X-Ratelimit-Remaining": "3598",
            "X-Ratelimit-Used": "2",
        }
    )
    assert RateLimitInfo.from_headers(headers) == RateLimitInfo("killmail", 3600, 900.0, 3598, 2)
    assert RateLimitInfo.from_headers(httpx.Headers()) == RateLimitInfo(
        None, None, None, None, None
    )


def test_error_limit_info_tolerates_garbage() -> None:
    headers = httpx.Headers({"X-ESI-Error-Limit-Remain": "7", "X-ESI-Error-Limit-Reset": "x"})
    assert ErrorLimitInfo.from_headers(headers) == ErrorLimitInfo(7, None)
    huge = httpx.Headers({"X-ESI-Error-Limit-Reset": "99999999999"})
    assert ErrorLimitInfo.from_headers(huge).reset_s == 60  # at most one error window


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("41", now=NOW) == 41.0
    assert parse_retry_after("Sun, 01 Jun 2025 12:00:30 GMT", now=NOW) == 30.0
    assert parse_retry_after("Sun, 01 Jun 2025 11:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("nan", now=NOW) is None
    assert parse_retry_after("1e12", now=NOW) == 900.0  # at most one bucket window
    assert parse_retry_after("Fri, 01 Jun 2125 12:00:00 GMT", now=NOW) == 900.0


def test_http_dates_are_utc_aware() -> None:
    parsed = parse_http_date("Sun, 01 Jun 2025 12:05:00 GMT")
    assert parsed == datetime(2025, 6, 1, 12, 5, tzinfo=UTC)
    assert parsed is not None and parsed.tzinfo is not None
    assert parse_http_date("yesterday") is None


@pytest.mark.parametrize(
    ("status", "cost"),
    [(200, 2), (204, 2), (304, 1), (404, 5), (422, 5), (429, 0), (500, 0), (503, 0)],
)
def test_token_cost_follows_ccp_table(status: int, cost: int) -> None:
    assert token_cost(status) == cost


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/characters/90000001/killmails/recent", "/characters/{id}/killmails/recent"),
        ("/killmails/123/" + "ab" * 20, "/killmails/{id}/{hash}"),
        ("/universe/names", "/universe/names"),
        ("/status/", "/status"),
    ],
)
def test_route_of(path: str, route: str) -> None:
    assert route_of(path) == route


def test_character_of_reads_sub_without_trusting_it() -> None:
    token = jwt.encode({"sub": "CHARACTER:EVE:90000001"}, "k" * 32, algorithm="HS256")
    assert character_of(token) == 90000001
    assert character_of(jwt.encode({"sub": "CORP:1"}, "k" * 32, algorithm="HS256")) is None
    assert character_of("opaque-token") is None
