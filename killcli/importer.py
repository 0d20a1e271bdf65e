"""Read ESI killmail bodies from files and archives, and save them in batches.

Sources: ``.json`` (one body or a list of bodies), ``.jsonl`` (one body per line),
either optionally ``.gz``/``.bz2`` compressed, EVE Ref daily archives
(``killmails-YYYY-MM-DD.tar.bz2``: one body per member file) and directories of those.

A malformed record is reported with its file and position and never stops the others; a
killmail the database refuses costs only itself (the batch is retried one by one). Memory
is bounded whatever the input: files are streamed (decompressed a bounded chunk at a time),
and one record (a JSON-lines line, an archive member, an element of a JSON array) may hold
at most :data:`MAX_RECORD_BYTES`; a larger one ends the reading of its file, since going
past it would mean decompressing it (a 731-byte archive can hold gigabytes of zeros).
JSON is parsed strictly (:func:`killcli.killmail.loads_body`).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from killcli.db import Database
from killcli.db.store import SaveTotals, save_killmails
from killcli.errors import InputError
from killcli.killmail import (
    ARCHIVE_KEYS,
    BadJson,
    KillmailError,
    KillmailRows,
    decode_body,
    loads_body,
    parse_killmail,
)
from killcli.values import SaveTimeValuer

ARCHIVE_SUFFIXES = (".tar.bz2", ".tar.gz", ".tgz", ".tar")
JSON_SUFFIXES = tuple(
    f"{base}{comp}" for base in (".json", ".jsonl") for comp in ("", ".gz", ".bz2")
)
DEFAULT_BATCH = 500
MAX_ERRORS_KEPT = 1000
MAX_RECORD_BYTES = 16 * 2**20  # real killmails are under 1 MiB; parsed, a record takes ~10x
READ_CHUNK = 2**20
_NOT_SPACE = re.compile(r"[^ \t\n\r]")
_READ_ERRORS = (OSError, EOFError, UnicodeDecodeError, tarfile.TarError, zlib.error)


class RecordTooLarge(KillmailError):
    """A record past :data:`MAX_RECORD_BYTES`: its file is not read further."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} larger than {MAX_RECORD_BYTES // 2**20} MiB; rest of the file not read"
        )


@dataclass(frozen=True)
class Record:
    """One body read from a source, or the reason it could not be read."""

    source: str
    position: str
    body: Any = None
    error: str | None = None


@dataclass
class ImportResult:
    """Counts of an import and the first :data:`MAX_ERRORS_KEPT` rejections."""

    read: int = 0
    new: int = 0
    already: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The ``import`` JSON payload (the rejections are printed as lines, not kept)."""
        return {
            "read": self.read,
            "new": self.new,
            "already_present": self.already,
            "rejected": self.rejected,
        }

    def reject(self, record: Record, reason: str) -> None:
        """Count a record that was not stored, and keep why (``file:position: reason``)."""
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


def _open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed as they are read (by content, not by name)."""
    with path.open("rb") as probe:
        magic = probe.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"BZh":
        return bz2.open(path, "rb")
    return path.open("rb")


def iter_records(path: Path) -> Iterator[Record]:
    """Every body in one file; read errors become records with an error."""
    name = str(path)
    try:
        with _open_binary(path) as fh:
            if path.name.endswith(ARCHIVE_SUFFIXES):
                yield from _iter_archive(name, fh)
            elif ".jsonl" in path.name:
                yield from _iter_jsonl(name, fh)
            else:
                yield from _iter_json(name, fh)
    except _READ_ERRORS as exc:
        yield Record(name, "", error=f"cannot read: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _parsed(source: str, position: str, data: bytes | str) -> Record:
    try:
        return Record(source, position, loads_body(data))
    except KillmailError as exc:
        return Record(source, position, error=str(exc))


def _iter_jsonl(name: str, fh: io.BufferedIOBase) -> Iterator[Record]:
    number = 0
    while line := fh.readline(MAX_RECORD_BYTES + 1):
        number += 1
        if len(line) > MAX_RECORD_BYTES:
            yield Record(name, f"line {number}", error=str(RecordTooLarge("line")))
            return
        if line.strip():
            yield _parsed(name, f"line {number}", line)


def _iter_archive(name: str, fh: io.BufferedIOBase) -> Iterator[Record]:
    with tarfile.open(fileobj=fh, mode="r|") as archive:
        for member in archive:
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            if member.size > MAX_RECORD_BYTES:
                yield Record(name, member.name, error=str(RecordTooLarge("member")))
                return
            data = archive.extractfile(member)
            if data is None:  # pragma: no cover - isfile() members always have data
                continue
            yield _parsed(name, member.name, data.read())


def _iter_json(name: str, fh: io.BufferedIOBase) -> Iterator[Record]:
    """One body, or a JSON array of bodies streamed element by element."""
    text = _TextBuffer(fh)
    if text.next_char() != "[":
        try:
            yield Record(name, "", loads_body(text.read_rest()))
        except BadJson as exc:
            where = f"{exc.line}:{exc.column}" if exc.line is not None else ""
            yield Record(name, where, error=str(exc))
        except KillmailError as exc:
            yield Record(name, "", error=str(exc))
        return
    text.skip(1)
    index = 0
    while (char := text.next_char()) != "]":
        try:
            if index:
                text.expect(char, ",")
            yield Record(name, f"[{index}]", text.decode_value())
        except KillmailError as exc:
            yield Record(name, f"[{index}]", error=str(exc))
            return
        index += 1


class _TextBuffer:
    """A window on a text stream for decoding a JSON array one element at a time.

    Holds the unread rest of one chunk plus at most one element (bounded by
    :data:`MAX_RECORD_BYTES`); an element cut by the window's end is decoded again with
    twice as much text, so the work stays linear in the element's size.
    """

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.eof = False

    def _read(self, size: int) -> str:
        data = self.stream.read(size)
        self.eof = not data
        return self.decoder.decode(data, final=self.eof)

    def _more(self, size: int) -> bool:
        if self.eof:
            return False
        self.text = self.text[self.pos :] + self._read(size)
        self.pos = 0
        return not self.eof

    def next_char(self) -> str:
        """The next character that is not JSON white space ("" at the end)."""
        while True:
            found = _NOT_SPACE.search(self.text, self.pos)
            if found is not None:
                self.pos = found.start()
                return self.text[self.pos]
            self.pos = len(self.text)
            if not self._more(READ_CHUNK):
                return ""

    def skip(self, count: int) -> None:
        self.pos += count

    def expect(self, char: str, wanted: str) -> None:
        """Consume ``wanted`` (the character just seen is ``char``)."""
        if char != wanted:
            raise BadJson(f"expected {wanted!r} between array elements, got {char[:1]!r}")
        self.skip(1)
        self.next_char()

    def read_rest(self) -> str:
        """The whole rest of the stream, if it is one record's worth."""
        parts = [self.text[self.pos :]]
        size = len(parts[0])
        while not self.eof and size <= MAX_RECORD_BYTES:
            parts.append(self._read(READ_CHUNK))
            size += len(parts[-1])
        if size > MAX_RECORD_BYTES:
            raise RecordTooLarge("file")
        return "".join(parts)

    def decode_value(self) -> Any:
        """The JSON value at the current position (strict), consumed."""
        size = READ_CHUNK
        while True:
            try:
                value, end = decode_body(self.text, self.pos)
            except BadJson:
                if not self._grow(size):
                    raise
            else:
                if end - self.pos > MAX_RECORD_BYTES:
                    raise RecordTooLarge("array element")
                if end < len(self.text) or not self._grow(size):
                    self.pos = end
                    return value
            size *= 2

    def _grow(self, size: int) -> bool:
        if len(self.text) - self.pos > MAX_RECORD_BYTES:
            raise RecordTooLarge("array element")
        return self._more(size)


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
    valuer: SaveTimeValuer | None = None,
) -> ImportResult:
    """Import every body in ``paths``; returns the counts and the first errors. With
    ``valuer``, new killmails whose prices are stored are valued as they are saved."""
    files = expand_paths(paths)
    result = ImportResult()
    totals = SaveTotals()
    batch: list[tuple[KillmailRows, Record]] = []

    def flush() -> None:
        if batch:
            with db.session() as session:
                saved = save_killmails(session, [rows for rows, _ in batch], isolate=True)
                if valuer is not None and saved.new_ids:
                    new = set(saved.new_ids)
                    valuer.value_new(session, [r for r, _ in batch if r.killmail_id in new])
            totals.add(saved)
            where = {rows.killmail_id: record for rows, record in reversed(batch)}
            for refused in saved.rejected:
                result.reject(where[refused.killmail_id], f"not stored: {refused.reason}")
            if on_batch:
                on_batch(len(batch) - len(saved.rejected))
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
                where = Record(record.source, record.position)  # without the body
                batch.append((to_rows(record.body), where))
            except KillmailError as exc:
                result.reject(record, str(exc))
                continue
            if len(batch) >= batch_size:
                flush()
    flush()
    result.new, result.already = totals.new, totals.already
    return result
