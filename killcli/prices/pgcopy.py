"""PostgreSQL reads a clean market-history file itself.

The decompressed bytes go straight into ``COPY .. (FORMAT csv, HEADER)`` (PostgreSQL's
own CSV parser: no Python code per row), into a table of text columns; one query then
checks every value of the price region's rows the way :mod:`killcli.prices.archive`
would take them. A file with any value it would not take as it is (a bad row, a price
written ``1e5``, a row of another width) is left to that reader instead, which skips
and reports the bad rows: this path stores a file whole or not at all.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from killcli.prices.archive import MAX_ID, MAX_PRICE, REQUIRED, _day, open_bytes
from killcli.prices.store import (
    BULK_DAY_ROWS,
    HISTORY_COLUMNS,
    PENDING,
    PG_LOAD,
    count_loaded_days,
    has_rows,
    pending_days,
    upsert_loaded,
)

_CASTS = {
    "region_id": "bigint",
    "type_id": "bigint",
    "date": "date",
    "average": "float8",
    "highest": "float8",
    "lowest": "float8",
    "volume": "bigint",
}
# What archive.RowReader takes (NaN and infinities fail the BETWEENs: NaN sorts last).
_IN_RANGE = (
    f"region_id BETWEEN 1 AND {MAX_ID} AND type_id BETWEEN 1 AND {MAX_ID}"
    f" AND average BETWEEN 0 AND {MAX_PRICE:.0f} AND highest BETWEEN 0 AND {MAX_PRICE:.0f}"
    f" AND lowest BETWEEN 0 AND {MAX_PRICE:.0f} AND volume >= 0 AND order_count >= 0"
)


@dataclass(frozen=True)
class CopiedFile:
    """What a file held: its rows of the region (stored), other regions' rows, the
    types and the first day of the rows stored."""

    rows: int
    other_regions: int
    type_ids: list[int]
    first_day: date | None


def copy_price_file(
    session: Session, path: Path, region_id: int, chunks: Iterable[bytes] | None = None
) -> CopiedFile | None:
    """Store the file's rows of ``region_id`` by COPY; None (nothing stored) when the
    file needs the row-by-row reader. ``chunks``: the file's bytes decompressed, when
    read ahead (else read here)."""
    import psycopg  # noqa: PLC0415 - PostgreSQL's driver, installed only with it

    with ExitStack() as stack:
        if chunks is None:
            raw = stack.enter_context(open_bytes(path))
            chunks = iter(lambda: raw.read(1 << 20), b"")
        stream = iter(chunks)
        try:
            head, rest = _split_header(stream)
        except (OSError, EOFError):
            return None
        where = _columns(head)
        if where is None:
            return None
        nested = session.begin_nested()
        try:
            copied = _copy(session, chain([rest], stream), region_id, where)
        except (DBAPIError, psycopg.Error):  # a row of another width, a date: the slow path
            nested.rollback()
            return None
        if copied is None:
            nested.rollback()
            return None
        nested.commit()
        return copied
    return None  # not reached: ExitStack swallows nothing


def _split_header(stream: Iterator[bytes]) -> tuple[bytes, bytes]:
    """The first line, and what follows it in the chunks read so far."""
    head = b""
    for chunk in stream:
        head += chunk
        if b"\n" in head:
            line, _, rest = head.partition(b"\n")
            return line, rest
    return head, b""


def _columns(head: bytes) -> _Where | None:
    try:
        header = next(csv.reader([head.decode("utf-8")]), None)
    except (UnicodeDecodeError, csv.Error):
        return None
    if not header:
        return None
    where = {name.strip().lower(): i for i, name in enumerate(header)}
    if not all(c in where for c in REQUIRED):
        return None
    named = {c: f"c{where[c]}" for c in (*REQUIRED, "order_count") if c in where}
    return _Where(named, len(header))


@dataclass(frozen=True)
class _Where:
    """The text column of each value (``c<index>``), and how many a row has."""

    columns: dict[str, str]
    width: int


def _copy(
    session: Session, data: Iterable[bytes], region_id: int, where: _Where
) -> CopiedFile | None:
    driver: Any = session.connection().connection.driver_connection
    columns = where.columns
    names = ", ".join(f"c{i} text" for i in range(where.width))
    region, day, mine = columns["region_id"], columns["date"], [str(region_id)]
    values = [f"{columns[c]}::{_CASTS[c]}" for c in REQUIRED]
    orders = columns.get("order_count")
    values.append(f"COALESCE({orders}, '0')::bigint" if orders else "0")
    select = f"SELECT {', '.join(values)} FROM market_history_csv WHERE {region} = %s"  # noqa: S608
    with driver.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS market_history_csv")
        cursor.execute(f"CREATE TEMPORARY TABLE market_history_csv ({names}) ON COMMIT DROP")
        with cursor.copy("COPY market_history_csv FROM STDIN (FORMAT csv)") as copy:
            for chunk in data:
                copy.write(chunk)
        cursor.execute(
            f"SELECT {region} = %s, {day}, count(*) FROM market_history_csv GROUP BY 1, 2",  # noqa: S608
            mine,
        )
        groups = cursor.fetchall()
        days = [d for ours, d, _ in groups if ours]
        if not all(map(_is_day, days)):
            return None
        stored = sum(n for ours, _, n in groups if ours)
        others = sum(n for ours, _, n in groups if not ours)
        fresh = _fresh_days(session, region_id, days, stored)
        target = "market_history" if fresh else "market_history_load"
        if not fresh:
            cursor.execute(PG_LOAD)
        # Fresh days: straight into the history (a row twice in the file fails the key:
        # then the reader's path, which keeps one).
        cursor.execute(
            f"INSERT INTO {target} ({', '.join(HISTORY_COLUMNS)}) {select} RETURNING type_id",
            mine,
        )
        type_ids = [t for (t,) in cursor.fetchall()]
        checked = (
            f"SELECT count(*) FROM {target} WHERE region_id = %s AND date = ANY(%s)"  # noqa: S608
            f" AND NOT ({_IN_RANGE})"
        )
        cursor.execute(checked, [region_id, [date.fromisoformat(d) for d in days]])
        if cursor.fetchone()[0]:
            return None
    if not fresh:
        count_loaded_days(session)
        upsert_loaded(session)
    first = min(days, default=None)
    return CopiedFile(stored, others, type_ids, date.fromisoformat(first) if first else None)


def _fresh_days(session: Session, region_id: int, days: list[str], rows: int) -> bool:
    """Whether every day of the file is new to the history and big (marked pending,
    then: counted in one pass later)."""
    wanted = [date.fromisoformat(d) for d in days]
    if not wanted or rows < BULK_DAY_ROWS * len(wanted):
        return False
    if any(has_rows(session, region_id, d) for d in wanted):
        return False
    if pending_days(session, [region_id]).get(region_id, set()) & set(wanted):
        return False
    session.execute(PENDING.insert(), [{"region_id": region_id, "date": d} for d in wanted])
    return True


def _is_day(text: str | None) -> bool:
    try:
        return text is not None and _day(text) == text
    except ValueError:
        return False
