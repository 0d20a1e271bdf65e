"""Adaptive cadence: characters whose newest killmail is old are polled less often.

As zKillboard does: a character that has not killed or died for a week rarely does so in
the next five minutes, so its list is asked for hourly instead of at every cache expiry,
and less often still as its newest killmail ages. Any new killmail resets it (the tier
follows ``characters.newest_killmail_at``).

A cadence is written compactly as ``AGE=INTERVAL`` pairs, ascending by age::

    7d=1h,30d=4h,90d=1d     newest kill > 7 days: hourly, > 30 days: every 4 h,
                            > 90 days or none at all: daily

Spans take ``s``, ``m``, ``h`` or ``d``. ``off`` polls every list when its cache expires.
This module only parses (the config check runs it without importing SQLAlchemy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from types import MappingProxyType

DEFAULT_CADENCE = "7d=1h,30d=4h,90d=1d"
OFF = "off"
#: Recent characters are polled at this base: ESI's cache of the recent list (300 s),
#: also the cron interval of the examples.
BASE_INTERVAL = timedelta(minutes=5)

_SPAN_RE = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT = MappingProxyType(
    {
        "s": timedelta(seconds=1),
        "m": timedelta(minutes=1),
        "h": timedelta(hours=1),
        "d": timedelta(days=1),
    }
)


class CadenceError(ValueError):
    """A cadence spec that cannot be used; ``str(exc)`` says why in one line."""


@dataclass(frozen=True)
class Tier:
    """Characters whose newest killmail is older than ``min_age`` are polled at most
    every ``interval``."""

    min_age: timedelta
    interval: timedelta

    @property
    def label(self) -> str:
        """The tier as written in the spec, e.g. ``"7d=1h"``."""
        return f"{format_span(self.min_age)}={format_span(self.interval)}"


@dataclass(frozen=True)
class Cadence:
    """The tiers, ascending by age; the last one also holds characters with no killmail."""

    tiers: tuple[Tier, ...] = ()

    def tier_of(self, newest_killmail_at: datetime | None, now: datetime) -> Tier | None:
        """The tier of a character (None: the base cadence, every cache expiry)."""
        if not self.tiers:
            return None
        if newest_killmail_at is None:
            return self.tiers[-1]
        age = now - newest_killmail_at
        older = [tier for tier in self.tiers if age > tier.min_age]
        return older[-1] if older else None

    @property
    def spec(self) -> str:
        """The canonical spec (what ``config show`` prints)."""
        return ",".join(t.label for t in self.tiers) or OFF


def format_span(span: timedelta) -> str:
    """``timedelta(hours=4)`` -> ``"4h"``: the largest unit that divides it."""
    seconds = int(span.total_seconds())
    for unit in ("d", "h", "m"):
        size = int(_UNIT[unit].total_seconds())
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse_span(text: str, what: str) -> timedelta:
    match = _SPAN_RE.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise CadenceError(f"{what} {text.strip()!r} is not a span like 30m, 4h or 7d")
    return int(match.group(1)) * _UNIT[match.group(2)]


def parse_cadence(text: str) -> Cadence:
    """Parse ``"7d=1h,30d=4h,90d=1d"`` (or ``off``); :class:`CadenceError` says what is wrong."""
    if text.strip().lower() == OFF:
        return Cadence()
    tiers = []
    for part in text.split(","):
        age, sep, interval = part.partition("=")
        if not sep:
            raise CadenceError(f"{part.strip()!r} is not AGE=INTERVAL (like 7d=1h)")
        tiers.append(Tier(_parse_span(age, "age"), _parse_span(interval, "interval")))
    for before, after in pairwise(tiers):
        if after.min_age <= before.min_age:
            raise CadenceError("ages must increase from left to right (like 7d=1h,30d=4h)")
        if after.interval < before.interval:
            raise CadenceError("an older tier cannot be polled more often than a newer one")
    if tiers[0].interval < BASE_INTERVAL:
        raise CadenceError(
            f"an interval below {format_span(BASE_INTERVAL)} (ESI's list cache) saves nothing"
        )
    return Cadence(tuple(tiers))


__all__ = [
    "BASE_INTERVAL",
    "DEFAULT_CADENCE",
    "Cadence",
    "CadenceError",
    "Tier",
    "format_span",
    "parse_cadence",
]
