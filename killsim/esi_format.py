"""Numbers and times the way ESI writes them, written for the simulator alone.

ESI is a Go service: its JSON comes from Go's ``encoding/json`` and its times from
``time.Time`` in RFC 3339 with whole seconds. The client (killsync) parses and formats
these on its own; the simulator must not borrow that code, or both would agree on a
bug (docs/architecture.md, "The simulator does not share code with the client").
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

#: Go's encoding/json writes a float64 in fixed-point notation below this magnitude.
_GO_FIXED_POINT_LIMIT = 1e21


def esi_time(value: datetime) -> str:
    """``2024-01-01T12:34:56Z``: UTC, whole seconds, a four-digit year (as ESI sends)."""
    if value.tzinfo is None:
        raise ValueError("ESI times are UTC: a naive datetime has no zone")
    utc = value.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


def go_number(value: float) -> float | int:
    """A float as the JSON number Go writes: integral values without a fraction.

    Go prints ``5`` for 5.0 (``strconv.FormatFloat(f, 'f', -1, 64)``), so Python must be
    handed the int; other finite values print alike in both for the magnitudes the
    simulator generates (security status, coordinates up to 1e12).
    """
    if math.isfinite(value) and abs(value) < _GO_FIXED_POINT_LIMIT:
        whole = math.floor(value)
        if whole == value:
            return whole
    return value
