"""Reading EVE Ref's daily market-history archives, streamed.

``market-history-YYYY-MM-DD.csv.bz2`` (also plain ``.csv``, and any file whose bytes are
bzip2 or gzip): RFC 4180 CSV with a header; EVE Ref's columns are ``average, date,
highest, lowest, order_count, volume, http_last_modified, region_id, type_id``, older
files order them differently, so columns are found by name. A row that does not parse
is reported (its file and line) and skipped; a file without the columns, or that is not
text, fails as a whole.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from itertools import islice
from pathlib import Path

from killcli.errors import InputError
from killcli.prices.store import HistoryTuple

SUFFIXES = (".csv", ".csv.bz2", ".csv.gz")
REQUIRED = ("region_id", "type_id", "date", "average", "highest", "lowest", "volume")
MAX_ID = 2**63 - 1
MAX_PRICE = 1e17


class ArchiveError(Exception):
    """A file that cannot be read as a market-history CSV (the message says why)."""


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped, and why."""

    line: int
    reason: str


def expand_price_paths(paths: Iterable[Path]) -> list[Path]:
    """Files to import, in a stable order (directories: their CSV files, recursively);
    a missing path is an error before any work."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    return files


def open_text(path: Path) -> io.TextIOBase:
    """The file as text, decompressed by its content (not its name)."""
    with path.open("rb") as probe:
        magic = probe.read(3)
    raw: io.BufferedIOBase
    # The caller closes the wrapper, which closes the file.
    if magic == b"BZh":
        raw = bz2.open(path, "rb")  # noqa: SIM115 - returned open, closed by the caller
    elif magic[:2] == b"\x1f\x8b":
        raw = gzip.open(path, "rb")  # noqa: SIM115 - returned open, closed by the caller
    else:
        raw = path.open("rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


class RowReader:
    """Iterate a file's rows in batches of ``HistoryTuple`` (only ``region_id``'s when
    given), collecting the rows it skipped in ``bad`` and counting other regions' rows.

    A batch is converted in one comprehension and checked column by column (C loops);
    only a batch holding a bad row is converted again row by row, to skip just that row.
    """

    def __init__(self, path: Path, region_id: int | None, batch_rows: int = 50_000) -> None:
        self.path = path
        self.region_id = region_id
        self.batch_rows = batch_rows
        self.bad: list[BadRow] = []
        self.bad_count = 0
        self.other_regions = 0
        self._days: set[str] = set()  # dates already checked (a daily file has one)

    def __iter__(self) -> Iterator[list[HistoryTuple]]:
        try:
            with open_text(self.path) as text:
                yield from self._batches(csv.reader(text))
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise ArchiveError(f"{self.path}: not a readable market-history CSV ({exc})") from exc

    def _batches(self, reader: Iterator[list[str]]) -> Iterator[list[HistoryTuple]]:
        header = next(reader, None)
        if header is None:
            raise ArchiveError(f"{self.path}: empty, no CSV header")
        where = {name.strip().lower(): i for i, name in enumerate(header)}
        missing = [c for c in REQUIRED if c not in where]
        if missing:
            raise ArchiveError(
                f"{self.path}: not a market-history CSV (no column {', '.join(missing)})"
            )
        columns = [where[c] for c in REQUIRED]
        line = 2
        while rows := list(islice(reader, self.batch_rows)):
            yield self._convert(rows, columns, where.get("order_count"), line)
            line += len(rows)

    def _convert(
        self, rows: list[list[str]], columns: list[int], orders: int | None, line: int
    ) -> list[HistoryTuple]:
        width = 1 + max(columns if orders is None else [*columns, orders])
        by_column = list(zip(*rows, strict=False))  # C loops from here on
        if min(map(len, rows)) < width or (
            self.region_id is not None and set(by_column[columns[0]]) != {str(self.region_id)}
        ):  # short rows, or other regions: row by row
            return self._one_by_one(rows, columns, orders, line)
        try:
            return self._checked(_fast(by_column, columns, orders, len(rows)))
        except ValueError:
            return self._one_by_one(rows, columns, orders, line)

    def _checked(self, batch: list[HistoryTuple]) -> list[HistoryTuple]:
        """Raise ValueError when a value of the batch is out of range or a bad date."""
        if not batch:
            return batch
        regions, types, days, avg, high, low, volumes, orders = zip(*batch, strict=True)
        if min(regions) <= 0 or min(types) <= 0 or max(regions) > MAX_ID or max(types) > MAX_ID:
            raise ValueError("id out of range")
        for prices in (avg, high, low):
            # The sum of finite values up to MAX_PRICE is finite: one C loop finds NaN, inf.
            if not math.isfinite(sum(prices)) or min(prices) < 0 or max(prices) > MAX_PRICE:
                raise ValueError("price out of range")
        if min(volumes) < 0 or min(orders) < 0 or max(volumes) > MAX_ID or max(orders) > MAX_ID:
            raise ValueError("count out of range")
        for day in set(days) - self._days:
            _day(day)
            self._days.add(day)
        return batch

    def _one_by_one(
        self, rows: list[list[str]], columns: list[int], orders: int | None, line: int
    ) -> list[HistoryTuple]:
        out: list[HistoryTuple] = []
        wanted = None if self.region_id is None else str(self.region_id)
        for number, row in enumerate(rows, start=line):
            try:
                if wanted is not None and row[columns[0]] != wanted:
                    self.other_regions += 1
                    continue
                values = row
                if orders is not None and len(row) > orders and row[orders] == "":
                    values = [*row[:orders], "0", *row[orders + 1 :]]  # an empty count is 0
                by_column = list(zip(*[values], strict=False))
                out.extend(self._checked(_fast(by_column, columns, orders, 1)))
            except (ValueError, IndexError) as exc:
                self._reject(number, row, columns, exc)
        return out

    def _reject(self, line: int, row: list[str], columns: list[int], exc: Exception) -> None:
        self.bad_count += 1
        if len(self.bad) < 20:
            reason = _why(row, columns) if isinstance(exc, ValueError) else "too few columns"
            self.bad.append(BadRow(line, reason[:200]))


def _fast(
    by_column: list[tuple[str, ...]], columns: list[int], orders: int | None, count: int
) -> list[HistoryTuple]:
    """Rows from their columns, each converted by one ``map``."""
    region, type_, day, avg, high, low, vol = columns
    order_counts = (0,) * count if orders is None else map(int, by_column[orders])
    return list(
        zip(
            map(int, by_column[region]),
            map(int, by_column[type_]),
            by_column[day],
            map(float, by_column[avg]),
            map(float, by_column[high]),
            map(float, by_column[low]),
            map(int, by_column[vol]),
            order_counts,
            strict=True,
        )
    )


def _why(row: list[str], columns: list[int]) -> str:
    """Which value of a bad row is wrong (its column and text)."""
    checks = (_id, _id, _day, _price, _price, _price, _count)
    for name, index, check in zip(REQUIRED, columns, checks, strict=True):
        try:
            check(row[index])
        except (ValueError, IndexError) as exc:
            return f"{name}: {exc}" if not isinstance(exc, IndexError) else f"{name}: missing"
    return "order_count: not a count"


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text[:30]!r}") from None
    if not low <= value <= MAX_ID:
        raise ValueError(f"{what} out of range: {text[:30]!r}")
    return value


def _id(text: str) -> int:
    return _integer(text, 1, "id")


def _count(text: str) -> int:
    return _integer(text, 0, "count")


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text[:30]!r}") from None
    if not math.isfinite(value) or value < 0 or value > MAX_PRICE:
        raise ValueError(f"price out of range: {text[:30]!r}")
    return value


def _day(text: str) -> str:
    """The date as stored (``YYYY-MM-DD``), checked."""
    if len(text) != 10:
        raise ValueError(f"not a date (YYYY-MM-DD): {text[:30]!r}")
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD): {text[:30]!r}") from None
    return text
