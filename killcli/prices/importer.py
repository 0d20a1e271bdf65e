"""`killsync prices import`: EVE Ref's daily market-history archives into the store.

Each file is streamed and stored in **one transaction** (batches of ``BATCH_ROWS`` rows),
with a record of its SHA-256 in ``price_imports``: a re-run skips the files already
stored, so an interrupted import resumes at the file it was in, and importing a file
again (``force``) leaves the same rows. Only the price region's rows are kept (EVE Ref's
files hold every region).
"""

from __future__ import annotations

import gc
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from queue import Empty, Queue
from typing import Any, TypeVar

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from killcli.db import Database
from killcli.db.models import PriceImport, table_of
from killcli.db.store import dialect_insert
from killcli.db.types import utcnow
from killcli.prices.archive import ArchiveError, RowReader, expand_price_paths, open_bytes
from killcli.prices.pgcopy import CopiedFile, copy_price_file
from killcli.prices.store import (
    HistoryTuple,
    by_day,
    count_pending_days,
    note_change,
    save_history,
)

T = TypeVar("T")
IMPORTS = table_of(PriceImport)
BATCH_ROWS = 10_000
AHEAD_BATCH_ROWS = 50_000  # a file read ahead is in memory already: parsed in fewer batches
SQLITE_IMPORT_CACHE_KIB = 262_144
MAX_ERRORS = 20
READ_AHEAD_BYTES = 64 << 20  # larger files are streamed when their turn comes


@dataclass
class PriceImportResult:
    """What an import did (``errors``: the first problems, file and line)."""

    files: int = 0
    skipped_files: int = 0
    failed_files: int = 0
    rows: int = 0
    other_regions: int = 0
    rejected_rows: int = 0
    types: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("errors")
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["rows_per_s"] = round(self.rows_per_s)
        return out

    def note(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (compressed: fast)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_price_files(
    db: Database,
    paths: Iterable[Path],
    region_id: int,
    *,
    force: bool = False,
    on_file: Callable[[Path], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> PriceImportResult:
    """Import every market-history file of ``paths`` (files, directories)."""
    import time  # noqa: PLC0415 - only the elapsed time of the run

    now = clock or time.perf_counter
    started = now()
    result = PriceImportResult()
    types: set[int] = set()
    files = expand_price_paths(paths)
    collecting = gc.isenabled()
    gc.disable()  # millions of row tuples, no cycles: the collector would only rescan them
    with db.session() as session:
        known = set(session.scalars(select(IMPORTS.c.sha256)))
    # Hashing and bzip2 let go of the GIL: a thread of their own reads the next file while
    # this one is parsed and stored (parsing there too would only contend for the GIL).
    ahead = prefetched(read_files(files, set() if force else known), depth=1)
    try:
        for read in ahead:
            if on_file:
                on_file(read.path)
            _import_file(db, read, region_id, force, result, types, on_rows)
    finally:
        if collecting:
            gc.enable()
        with db.session() as session:
            _bulk_sqlite(session, on=True)
            count_pending_days(session)  # the days the files added, counted in one pass
            _bulk_sqlite(session, on=False)
    if result.rows and db.dialect == "postgresql":
        # Fresh statistics after a bulk load: without them PostgreSQL plans the valuation's
        # window reads as bitmap scans of the whole region (30x slower).
        with db.session() as session:
            session.execute(text("ANALYZE market_history"))
    result.types = len(types)
    result.elapsed_s = now() - started
    return result


@dataclass(frozen=True)
class ReadFile:
    """A file as :func:`read_files` hands it over: its SHA-256 (None when it cannot be
    read: ``error`` says why) and its bytes decompressed (None when it is big, stored
    already, or not a compressed file that opens: then read when its turn comes)."""

    path: Path
    digest: str | None
    data: bytes | None = None
    error: str | None = None


def read_files(files: Iterable[Path], stored: set[str]) -> Iterator[ReadFile]:
    """Each file hashed and, unless its digest is in ``stored``, read ahead."""
    for path in files:
        try:
            digest = file_digest(path)
        except OSError as exc:
            yield ReadFile(path, None, error=f"cannot read ({exc.strerror or exc})")
            continue
        yield ReadFile(path, digest, None if digest in stored else read_ahead(path))


def _import_file(
    db: Database,
    read: ReadFile,
    region_id: int,
    force: bool,
    result: PriceImportResult,
    types: set[int],
    on_rows: Callable[[int], None] | None,
) -> None:
    path, digest = read.path, read.digest
    if digest is None:
        result.failed_files += 1
        result.note(f"{path}: {read.error}")
        return
    batch_rows = BATCH_ROWS if read.data is None else AHEAD_BATCH_ROWS
    reader = RowReader(path, region_id, batch_rows, read.data)
    file_types: set[int] = set()
    file_days: set[str] = set()
    copied: CopiedFile | None = None
    stored = 0
    try:
        with db.session() as session:
            _bulk_sqlite(session, on=True)
            if not force and session.get(PriceImport, digest) is not None:
                result.skipped_files += 1
                return
            if db.dialect == "postgresql":
                chunks = None if read.data is None else [read.data]
                copied = copy_price_file(session, path, region_id, chunks)
            if copied is not None:
                stored = copied.rows
                if on_rows:
                    on_rows(stored)
                first = copied.first_day
            else:  # read ahead: parsed here; else streamed, read by a thread of its own
                batches = reader if read.data is not None else prefetched(reader)
                for batch in batches:
                    stored += _flush(session, batch, file_types, file_days, on_rows)
                first = date.fromisoformat(min(file_days)) if file_days else None
            if first is not None:  # a file changes every type's prices from its first day on
                note_change(session, region_id, None, first, utcnow())
            _record(session, digest, path.name, stored)
    except ArchiveError as exc:
        result.failed_files += 1
        result.note(str(exc))
        return
    result.files += 1
    result.rows += stored
    if copied is not None:
        result.other_regions += copied.other_regions
        types.update(copied.type_ids)
        return
    result.other_regions += reader.other_regions
    result.rejected_rows += reader.bad_count
    types.update(file_types)
    for bad in reader.bad:
        result.note(f"{path}:{bad.line}: {bad.reason}")


def read_ahead(path: Path, limit: int | None = None) -> bytes | None:
    """A file's bytes decompressed, when it holds at most ``limit`` (``READ_AHEAD_BYTES``;
    else, or when it cannot be read, None: it is then streamed, or fails, when its turn
    comes)."""
    limit = READ_AHEAD_BYTES if limit is None else limit
    chunks: list[bytes] = []
    size = 0
    try:
        with open_bytes(path) as raw:
            while chunk := raw.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    except (OSError, EOFError):
        return None
    return b"".join(chunks)


def _bulk_sqlite(session: Any, *, on: bool) -> None:
    """On SQLite, while files are stored: a 256 MiB page cache (a day's rows land one per
    type all over the history's index, which the default 2 MiB cache rereads from disk as
    the table grows) and a checkpoint every 100,000 WAL pages instead of 1,000 (each file
    rewrites thousands of index pages: checkpointed after every file, each is written back
    again and again; +40 % rows/s on 90 days). Back to the defaults after the last file."""
    if session.get_bind().dialect.name != "sqlite":
        return
    cache, checkpoint = (SQLITE_IMPORT_CACHE_KIB, 100_000) if on else (2_000, 1_000)
    with suppress(SQLAlchemyError):  # a failed file's own error is the one to report
        session.execute(text(f"PRAGMA cache_size = -{cache}"))
        session.execute(text(f"PRAGMA wal_autocheckpoint = {checkpoint}"))


def prefetched(batches: Iterable[T], depth: int = 3) -> Iterator[T]:
    """``batches``, produced by a thread of their own while the caller stores the last
    one: bzip2 and SQLite let go of the GIL while they work, so reading the next batch
    overlaps the writes. The producer's exception is raised here."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                queue.put((True, batch))
            queue.put((False, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            queue.put((False, exc))

    thread = threading.Thread(target=produce, name="price-reader", daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with suppress(Empty):
                queue.get(timeout=0.05)
        thread.join()


def _flush(
    session: Any,
    batch: list[HistoryTuple],
    file_types: set[int],
    file_days: set[str],
    on_rows: Callable[[int], None] | None,
) -> int:
    """Store a batch; the types and days it holds added to the file's (grouped once, for
    the store's day counts and for these)."""
    if not batch:
        return 0
    groups = by_day(batch)
    save_history(session, batch, groups)
    for (_, day), type_ids in groups.items():
        file_types.update(type_ids)
        file_days.add(day)
    count = len(batch)
    if on_rows:
        on_rows(count)
    return count


def _record(session: Any, digest: str, name: str, rows: int) -> None:
    stmt = dialect_insert(session, IMPORTS)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[IMPORTS.c.sha256],
            set_={"file_name": name, "rows": rows, "imported_at": utcnow()},
        ),
        [{"sha256": digest, "file_name": name, "rows": rows, "imported_at": utcnow()}],
    )


def imported_files(db: Database) -> list[str]:
    """Names of the files stored so far (for tests and `prices` reports)."""
    with db.session() as session:
        return list(session.scalars(select(IMPORTS.c.file_name).order_by(IMPORTS.c.file_name)))
