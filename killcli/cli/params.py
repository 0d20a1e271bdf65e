"""Bounded command-line numbers: one place that says what a valid id, port or duration is
(and the one ``--since`` date parser).

Each function is a Typer ``parser=``: it turns the text of an argument into a value or
raises :class:`typer.BadParameter`, which Typer reports as a usage error (exit 2) naming
the option. Python parses ``nan``, ``inf`` and ``1e309`` as floats and integers of any
size, so every number is checked for being finite and in range here, before it reaches
a ``time.sleep``, a socket or a database column (ids are BIGINT: at most 2^63 - 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

import typer

from killcli.db.types import utcnow
from killcli.errors import UsageError
from killcli.events.outbox import parse_age
from killcli.queue.base import MAX_PRIORITY

MAX_ID = 2**63 - 1  # ESI ids are int64; the database stores BIGINT
MAX_PORT = 65_535
MAX_CONCURRENCY = 256  # character syncs per worker; each holds threads and a connection
MAX_DURATION_S = 86_400.0  # one day: longer waits are a typo (and overflow some clocks)
MIN_WATCH_S = 0.5  # `stats --watch` refreshes no faster than twice a second
MAX_AGE_S = 10 * 365 * 86_400  # ten years: beyond it dates overflow, and ESI has 90 days


def _integer(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a whole number ({what})") from None
    if not low <= value <= high:
        raise typer.BadParameter(f"{value} is out of range ({what}: {low}..{high})")
    return value


def _seconds(text: str, low: float, high: float, *, low_open: bool) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number of seconds") from None
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise typer.BadParameter(f"{text} seconds: must be finite, {bound} and at most {high:g}")
    return value


def character_id(text: str) -> int:
    """An EVE character id: 1..2^63-1."""
    return _integer(text, "a character id", 1, MAX_ID)


def corporation_id(text: str) -> int:
    """An EVE corporation id: 1..2^63-1."""
    return _integer(text, "a corporation id", 1, MAX_ID)


def killmail_id(text: str) -> int:
    """An EVE killmail id: 1..2^63-1."""
    return _integer(text, "a killmail id", 1, MAX_ID)


def system_id(text: str) -> int:
    """An EVE solar system id: 1..2^63-1."""
    return _integer(text, "a solar system id", 1, MAX_ID)


def group_id(text: str) -> int:
    """An EVE inventory group id: 1..2^63-1."""
    return _integer(text, "an inventory group id", 1, MAX_ID)


def port(text: str) -> int:
    """A TCP port to listen on: 1..65535."""
    return _integer(text, "a TCP port", 1, MAX_PORT)


def port_or_any(text: str) -> int:
    """A TCP port, or 0 for any free one."""
    return _integer(text, "a TCP port, 0 for any free one", 0, MAX_PORT)


def concurrency(text: str) -> int:
    """How many character syncs run at once: 1..MAX_CONCURRENCY."""
    return _integer(text, "the number of syncs at once", 1, MAX_CONCURRENCY)


def row_id(text: str) -> int:
    """The id of a stored row (a webhook): 1..2^63-1."""
    return _integer(text, "an id", 1, MAX_ID)


def region_id(text: str) -> int:
    """An EVE region id (10000000..12999999)."""
    return _integer(text, "a region id", 10_000_000, 12_999_999)


def days(text: str) -> int:
    """A number of days: 1..3650."""
    return _integer(text, "a number of days", 1, 3650)


def per_minute(text: str) -> int:
    """Market-history requests a minute: 1..300 (CCP's limit for the route)."""
    return _integer(text, "requests a minute", 1, 300)


def priority(text: str) -> int:
    """A job priority: 0..10, higher first."""
    return _integer(text, "a priority", 0, MAX_PRIORITY)


def age_s(text: str) -> int:
    """An age in whole seconds (``webhooks add --max-age``): 1..ten years."""
    return _integer(text, "an age in seconds", 1, MAX_AGE_S)


def count(text: str) -> int:
    """A positive count (``--max-jobs``): 1..2^63-1."""
    return _integer(text, "a count", 1, MAX_ID)


def timeout_s(text: str) -> float:
    """A timeout: finite, more than 0 and at most a day."""
    return _seconds(text, 0.0, MAX_DURATION_S, low_open=True)


def interval_s(minimum_s: float = MIN_WATCH_S) -> Callable[[str], float]:
    """A refresh interval: finite, at least ``minimum_s`` and at most a day."""

    def parse(text: str) -> float:
        return _seconds(text, minimum_s, MAX_DURATION_S, low_open=False)

    return parse


def duration(text: str) -> timedelta:
    """A duration (``90m``, ``12h``, ``7d``, ``2w`` or seconds): 0..ten years."""
    try:
        value = parse_age(str(text))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if value.total_seconds() > MAX_AGE_S:
        raise typer.BadParameter(f"{text} is out of range (a duration: at most ten years)")
    return value


def since(text: str) -> datetime:
    """A moment: a date (``2026-01-01``, UTC), an ISO date-time, or a duration ago (``7d``)."""
    value = str(text).strip()
    if "-" not in value:  # no date has none, no duration has one
        return utcnow() - duration(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date (YYYY-MM-DD, an ISO date-time, or a duration like 7d)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def limit(text: str) -> int:
    """How many rows to show: 1..10000."""
    return _integer(text, "a number of rows", 1, 10_000)


_ISK_RE = re.compile(r"^(\d{1,15}(?:\.\d{1,2})?)([kmbt]?)$")
_ISK_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
MAX_ISK = Decimal(10) ** 15  # more than any killmail was ever worth


def isk(text: str) -> Decimal:
    """An ISK amount: ``2500000``, ``1.5b``, ``500m``, ``20k`` (more than 0, at most 10^15)."""
    match = _ISK_RE.match(str(text).strip().lower().replace(",", "").replace("_", ""))
    if match is None:
        raise typer.BadParameter(f"{text!r} is not an ISK amount (like 2500000, 500m or 1.5b)")
    value = Decimal(match.group(1)) * _ISK_UNITS[match.group(2)]
    if not 0 < value <= MAX_ISK:
        raise typer.BadParameter(
            f"{text} is out of range (an ISK amount: more than 0, at most 1e15)"
        )
    return value


# The one `--json` flag: every command that can print JSON takes it with this spelling.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def parse_since(value: str | None) -> datetime | None:
    """``--since``: a date or ISO date-time, UTC unless it says otherwise."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"--since: not a date (YYYY-MM-DD or ISO date-time): {value!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
