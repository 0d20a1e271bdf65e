"""The simulator's own numbers and times are what ESI sends (checked on sample bodies: the
built ones, and the real ESI bodies of the shared folder where it exists)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from killsim.bodies import encode
from killsim.esi_format import esi_time, go_number
from tests.refdata import killmail_samples

ESI_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


SAMPLES = killmail_samples()


def test_times_are_utc_whole_seconds_with_a_z() -> None:
    assert esi_time(datetime(2024, 1, 1, 12, 34, 56, tzinfo=UTC)) == "2024-01-01T12:34:56Z"
    cest = timezone(timedelta(hours=2))
    assert esi_time(datetime(2024, 7, 1, 2, 0, 5, tzinfo=cest)) == "2024-07-01T00:00:05Z"
    assert esi_time(datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)) == "2024-01-01T00:00:00Z"
    assert esi_time(datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC)) == "0999-03-04T05:06:07Z"
    with pytest.raises(ValueError, match="naive"):
        esi_time(datetime(2024, 1, 1))  # no zone: refused


def test_numbers_as_go_writes_them() -> None:
    whole = [go_number(v) for v in (5.0, -1.0, 0.0, 1.25e11, 1e20)]
    assert whole == [5, -1, 0, 125_000_000_000, 10**20]
    assert all(isinstance(n, int) for n in whole)
    assert [go_number(v) for v in (-0.5, 123456789.125)] == [-0.5, 123456789.125]
    # Go switches to exponent form at 1e21, as Python's float repr does.
    assert isinstance(go_number(1e21), float) and isinstance(go_number(float("inf")), float)


@pytest.mark.parametrize("text", SAMPLES.values(), ids=SAMPLES.keys())
def test_sample_bodies_come_out_as_esi_wrote_them(text: str) -> None:
    as_sent = json.loads(text)  # integers where ESI wrote no fraction
    as_floats = json.loads(text, parse_int=float)  # what the simulator computes with
    expected = json.dumps(as_sent, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert encode(as_floats).decode("utf-8") == expected
