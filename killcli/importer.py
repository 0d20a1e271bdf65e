"""Read ESI killmail bodies from files and archives, and save them in batches.

Sources: ``.json`` (one body or a list of bodies), ``.jsonl`` (one body per line),
either optionally ``.gz``/``.bz2`` compressed, EVE Ref daily archives
(``killmails-YYYY-MM-DD.tar.bz2``: one body per member file) and directories of those.
A malformed record is reported with its file and position and never stops the others;
each batch is one transaction, so a killmail is either stored whole or not at all.
"""

from __future__ import annotations

import bz2
import gzip
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from killcli.db import Database
from killcli.db.store import SaveTotals, save_killmails
from killcli.errors import InputError
from killcli.killmail import ARCHIVE_KEYS, KillmailError, KillmailRows, parse_killmail

ARCHIVE_SUFFIXES = (".tar.bz2", ".tar.gz", ".tgz", ".tar")
JSON_SUFFIXES = tuple(
    f"{base}{comp}" for base in (".json", ".jsonl") for comp in ("", ".gz", ".bz2")
)
DEFAULT_BATCH = 500
MAX_ERRORS_KEPT = 1000


@dataclass(frozen=True)
class Record:
    """One body read from a source, or the reason it could not be read."""

    source: str
    position: str
    body: Any = None
    error: str | None = None


@dataclass
class ImportResult:
    read: int = 0
    new: int = 0
    already: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, record: Record, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            where = f"{record.source}:{record.position}" if record.position else record.source
            self.errors.append(f"{where}: {reason}")


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files to read, in a stable order; a missing path is an error before any work."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and _known(p)))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    return files


def _known(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES + JSON_SUFFIXES)


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def iter_records(path: Path) -> Iterator[Record]:
    """Every body in one file; read errors become records with an error."""
    name = str(path)
    try:
        if path.name.endswith(ARCHIVE_SUFFIXES):
            yield from _iter_archive(path)
        elif ".jsonl" in path.name:
            yield from _iter_jsonl(path)
        else:
            yield from _iter_json(path)
    except (OSError, EOFError, UnicodeDecodeError, tarfile.TarError) as exc:
        yield Record(name, "", error=f"cannot read: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _iter_json(path: Path) -> Iterator[Record]:
    with _open_text(path) as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            yield Record(str(path), f"{exc.lineno}:{exc.colno}", error=f"bad JSON: {exc.msg}")
            return
    if isinstance(data, list):
        for index, body in enumerate(data):
            yield Record(str(path), f"[{index}]", body)
    else:
        yield Record(str(path), "", data)


def _iter_jsonl(path: Path) -> Iterator[Record]:
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield Record(str(path), f"line {number}", json.loads(line))
            except json.JSONDecodeError as exc:
                yield Record(str(path), f"line {number}", error=f"bad JSON: {exc.msg}")


def _iter_archive(path: Path) -> Iterator[Record]:
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            fh = archive.extractfile(member)
            if fh is None:  # pragma: no cover - isfile() members always have data
                continue
            raw = fh.read()
            try:
                yield Record(str(path), member.name, json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield Record(str(path), member.name, error=f"bad JSON: {_reason(exc)}")


def to_rows(body: Any) -> KillmailRows:
    """Validate a body; archive metadata beside it (the hash) is kept apart."""
    killmail_hash = None
    if isinstance(body, dict) and ARCHIVE_KEYS & body.keys():
        killmail_hash = body.get("killmail_hash")
        body = {k: v for k, v in body.items() if k not in ARCHIVE_KEYS}
    if killmail_hash is not None and not isinstance(killmail_hash, str):
        raise KillmailError("killmail_hash: expected a string")
    return parse_killmail(body, killmail_hash=killmail_hash)


def import_killmails(
    db: Database,
    paths: Iterable[Path],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_file: Callable[[Path], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import every body in ``paths``; returns the counts and the first errors."""
    files = expand_paths(paths)
    result = ImportResult()
    totals = SaveTotals()
    batch: list[KillmailRows] = []

    def flush() -> None:
        if batch:
            with db.session() as session:
                totals.add(save_killmails(session, batch))
            if on_batch:
                on_batch(len(batch))
            batch.clear()

    for path in files:
        if on_file:
            on_file(path)
        for record in iter_records(path):
            if record.error is not None:
                result.reject(record, record.error)
                continue
            result.read += 1
            try:
                batch.append(to_rows(record.body))
            except KillmailError as exc:
                result.reject(record, str(exc))
                continue
            if len(batch) >= batch_size:
                flush()
    flush()
    result.new, result.already = totals.new, totals.already
    return result
