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
from itertools import chain, compress, islice, repeat
from pathlib import Path
from typing import IO, Any, cast

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


def open_bytes(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed by its content (not its name)."""
    with path.open("rb") as probe:
        magic = probe.read(3)
    # The caller closes the file.
    if magic == b"BZh":
        return bz2.open(path, "rb")
    if magic[:2] == b"\x1f\x8b":
        return cast("IO[bytes]", gzip.open(path, "rb"))  # a GzipFile reads bytes
    return path.open("rb")


def open_text(path: Path, data: bytes | None = None) -> io.TextIOBase:
    """The file as text, decompressed by its content (not its name); ``data``: its bytes
    already decompressed (read ahead), used instead of the file."""
    raw = open_bytes(path) if data is None else io.BytesIO(data)
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


class RowReader:
    """Iterate a file's rows in batches of ``HistoryTuple`` (only ``region_id``'s when
    given), collecting the rows it skipped in ``bad`` and counting other regions' rows.

    A file without quotes (EVE Ref's) is cut into lines and fields by ``str.split`` on
    blocks of text, each column converted by one ``map`` and checked by ``min``/``max``:
    no Python code runs per row. A block holding a bad row, and a file with quotes, go
    through :mod:`csv` row by row instead (the bad row is skipped, its line reported).
    """

    def __init__(
        self,
        path: Path,
        region_id: int | None,
        batch_rows: int = 50_000,
        data: bytes | None = None,
    ) -> None:
        """``data``: the file's bytes already decompressed (else the file is read)."""
        self.path = path
        self._data = data
        self.region_id = region_id
        self.batch_rows = batch_rows
        self.bad: list[BadRow] = []
        self.bad_count = 0
        self.other_regions = 0
        self._days: set[str] = set()  # dates already checked (a daily file has one)

    def __iter__(self) -> Iterator[list[HistoryTuple]]:
        try:
            with open_text(self.path, self._data) as text:
                yield from self._batches(text)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise ArchiveError(f"{self.path}: not a readable market-history CSV ({exc})") from exc

    def _batches(self, text: io.TextIOBase) -> Iterator[list[HistoryTuple]]:
        first = text.readline()
        header = next(csv.reader([first]), None) if first.strip() else None
        if header is None:
            raise ArchiveError(f"{self.path}: empty, no CSV header")
        where = {name.strip().lower(): i for i, name in enumerate(header)}
        missing = [c for c in REQUIRED if c not in where]
        if missing:
            raise ArchiveError(
                f"{self.path}: not a market-history CSV (no column {', '.join(missing)})"
            )
        layout = _Layout([where[c] for c in REQUIRED], where.get("order_count"), len(header))
        line, carry = 2, ""
        while block := text.read(self.batch_rows * 64):
            block = (carry + block).replace("\r\n", "\n")
            if '"' in block or "\r" in block.rstrip("\r"):  # quoting: the csv module's job
                block += text.readline()  # to a line's end: the reader goes on from there
                rest = csv.reader(chain(io.StringIO(block, newline=""), text))
                yield from self._csv_batches(rest, layout, line)
                return
            lines = block.split("\n")
            carry = lines.pop()
            if lines:
                yield self._convert(lines, layout, line)
                line += len(lines)
        if carry.strip("\r"):
            yield self._convert([carry.rstrip("\r")], layout, line)

    def _csv_batches(
        self, rows: Iterator[list[str]], layout: _Layout, line: int
    ) -> Iterator[list[HistoryTuple]]:
        while batch := list(islice(rows, self.batch_rows)):
            yield self._one_by_one(batch, layout, line)
            line += len(batch)

    def _convert(self, lines: list[str], layout: _Layout, line: int) -> list[HistoryTuple]:
        if set(map(str.count, lines, repeat(","))) != {layout.width - 1}:
            return self._one_by_one(list(csv.reader(lines)), layout, line)
        fields = ",".join(lines).split(",")  # C loops from here on
        by_column = [fields[i :: layout.width] for i in layout.columns]
        others = 0
        if self.region_id is not None:
            wanted = str(self.region_id)
            if by_column[0].count(wanted) != len(lines):  # other regions: keep ours
                keep = list(map(wanted.__eq__, by_column[0]))
                others = len(lines) - sum(keep)
                by_column = [list(compress(c, keep)) for c in by_column]
        try:  # every row is the price region's now: its ids need no conversion
            batch = self._checked(_fast(by_column, len(by_column[0]), self.region_id))
        except ValueError:
            return self._one_by_one(list(csv.reader(lines)), layout, line)
        self.other_regions += others
        return batch

    def _checked(self, columns: list[list[Any]]) -> list[HistoryTuple]:
        """The rows of converted columns; ValueError when a value is out of range or a
        date is not one."""
        regions, types, days, avg, high, low, volumes, orders = columns
        if not regions:
            return []
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
        return list(zip(*columns, strict=True))

    def _one_by_one(self, rows: list[list[str]], layout: _Layout, line: int) -> list[HistoryTuple]:
        out: list[HistoryTuple] = []
        wanted = None if self.region_id is None else str(self.region_id)
        columns, orders = layout.columns, layout.orders
        for number, row in enumerate(rows, start=line):
            try:
                if wanted is not None and row[columns[0]] != wanted:
                    self.other_regions += 1
                    continue
                values = row
                if orders is not None and len(row) > orders and row[orders] == "":
                    values = [*row[:orders], "0", *row[orders + 1 :]]  # an empty count is 0
                out.extend(self._checked(_fast([[values[i]] for i in columns], 1)))
            except (ValueError, IndexError) as exc:
                self._reject(number, row, columns, exc)
        return out

    def _reject(self, line: int, row: list[str], columns: list[int], exc: Exception) -> None:
        self.bad_count += 1
        if len(self.bad) < 20:
            reason = _why(row, columns) if isinstance(exc, ValueError) else "too few columns"
            self.bad.append(BadRow(line, reason[:200]))


@dataclass(frozen=True)
class _Layout:
    """Where a file's columns are: those of ``REQUIRED`` then ``order_count`` (when the
    file has one), and how many a row has."""

    required: list[int]
    orders: int | None
    width: int

    @property
    def columns(self) -> list[int]:
        return self.required if self.orders is None else [*self.required, self.orders]


def _fast(by_column: list[list[str]], count: int, region_id: int | None = None) -> list[list[Any]]:
    """Columns (``_Layout.columns``' order) converted, each by one ``map`` (``region_id``:
    every row's region, known)."""
    region, type_, day, avg, high, low, vol, *orders = by_column
    return [
        list(map(int, region)) if region_id is None else [region_id] * count,
        list(map(int, type_)),
        day,
        list(map(float, avg)),
        list(map(float, high)),
        list(map(float, low)),
        list(map(int, vol)),
        list(map(int, orders[0])) if orders else [0] * count,
    ]


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
        parsed = date.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.isoformat() != text:  # not "2025-W01-1", which it takes
        raise ValueError(f"not a date (YYYY-MM-DD): {text[:30]!r}")
    return text
