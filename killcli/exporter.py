"""Write stored killmails back out as ESI bodies (JSON lines or a JSON array).

:func:`open_output` decides how ``--output PATH`` is written, so that exporting never
damages what is at the path:

- a **regular file or a new path**: the data goes to a private temporary file created
  beside it (``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600, random name), is flushed and
  ``fsync``-ed, given its final mode, and renamed over the path: readers see the old file
  or the new one, never a half-written one, and a failure leaves the old file untouched.
  A replaced file keeps its mode (and, run as root, its owner); a new file gets
  ``0666 & ~umask``, as the shell's ``>`` would give it (killmails are public data). A file
  the user may not write is refused, as ``>`` would refuse it.
- **something that is not a regular file** (a FIFO, a character device such as
  ``/dev/null`` or a terminal, a socket), directly or through a symbolic link: written in
  place, opened without ``O_CREAT``/``O_TRUNC``; ``/dev/stdout`` (and ``/dev/fd/1``,
  ``/proc/self/fd/1``, ``-``) means the inherited standard output.
- a **symbolic link to a regular file** (or a dangling one) is refused: replacing the file
  it points to is what a link planted in a shared directory is for. Give the real path.

Every failure is an :class:`~killcli.errors.InputError` naming the path (exit code 2).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from killcli.db import Database
from killcli.db.store import iter_killmail_bodies
from killcli.errors import InputError

ExportFormat = Literal["jsonl", "json"]
STDOUT_NAMES = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
TEMP_MODE = 0o600
_TEMP_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)
_IN_PLACE_FLAGS = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC
MAX_SKIPPED_KEPT = 100


@dataclass
class ExportResult:
    """How many killmails were written, and those that could not be written as JSON."""

    written: int = 0
    skipped: list[str] = field(default_factory=list)
    skipped_count: int = 0

    def skip(self, reason: str) -> None:
        """Count a killmail left out, keeping the first reasons."""
        self.skipped_count += 1
        if len(self.skipped) < MAX_SKIPPED_KEPT:
            self.skipped.append(reason)


def dumps_body(body: dict[str, Any], *, indent: int | None = None) -> str:
    """A body as ESI writes it: UTF-8 text, keys in ESI's (alphabetical) order.

    Standard JSON only: a non-finite number (stored by an older killsync) raises
    :class:`ValueError` instead of being written as ``NaN``/``Infinity``.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(body, ensure_ascii=False, indent=indent, separators=separators,
                      allow_nan=False)


def export_killmails(
    db: Database,
    out: IO[str],
    *,
    fmt: ExportFormat = "jsonl",
    character_id: int | None = None,
    since: datetime | None = None,
) -> ExportResult:
    """Stream killmails to ``out``; a body that is not standard JSON is skipped and listed."""
    result = ExportResult()
    with db.session() as session:
        bodies = iter_killmail_bodies(session, character_id=character_id, since=since)
        if fmt == "json":
            out.write("[")
        for body in bodies:
            try:
                text = dumps_body(body)
            except ValueError as exc:
                result.skip(f"killmail {body.get('killmail_id')}: {exc}")
                continue
            if fmt == "json":
                out.write(",\n" if result.written else "\n")
                out.write(text)
            else:
                out.write(text + "\n")
            result.written += 1
        if fmt == "json":
            out.write("\n]\n" if result.written else "]\n")
    return result


# -- where the export goes --------------------------------------------------------------


@contextmanager
def open_output(path: Path | None) -> Iterator[IO[str]]:
    """A text stream for ``--output`` (see the module docstring); committed on success.

    The rename over a regular file happens when the ``with`` block ends without an
    exception; with one, the temporary file is removed and the target is left as it was.
    """
    if path is None or str(path) in STDOUT_NAMES:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = _classify(path)
    try:
        if target is None:
            with _replace_atomically(path) as out:
                yield out
        else:
            with _open_in_place(path) as out:
                yield out
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _classify(path: Path) -> os.stat_result | None:
    """The non-regular file to write in place, or None for a file to replace atomically."""
    try:
        link = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    if not stat.S_ISLNK(link.st_mode):
        return None if stat.S_ISREG(link.st_mode) or stat.S_ISDIR(link.st_mode) else link
    try:
        real = path.stat()
    except OSError:
        real = None
    if real is None or stat.S_ISREG(real.st_mode) or stat.S_ISDIR(real.st_mode):
        raise InputError(f"{path}: is a symbolic link (to {os.path.realpath(path)}); "
                         "killsync does not replace a file through a link: give the real path")
    return real


@contextmanager
def _open_in_place(path: Path) -> Iterator[IO[str]]:
    """A FIFO, device or socket: opened as it is, never created, truncated or renamed."""
    fd = os.open(path, _IN_PLACE_FLAGS)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yield out


@contextmanager
def _replace_atomically(path: Path) -> Iterator[IO[str]]:
    """Write a private temporary file beside ``path``, then rename it over ``path``."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if path.exists() and not os.access(path, os.W_OK):  # read-only: refused, as `>` would
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    temp, fd = _create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            _finish_mode(out.fileno(), path)
            os.fsync(out.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _create_temp(path: Path) -> tuple[Path, int]:
    """A new file no one else can have planted: random name, ``O_EXCL``, no links."""
    for _ in range(10):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
        try:
            return temp, os.open(temp, _TEMP_FLAGS, TEMP_MODE)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(path.parent))


def _finish_mode(fd: int, path: Path) -> None:
    """The replaced file's mode and owner, or what the shell would give a new file."""
    try:
        old = path.lstat()
    except FileNotFoundError:
        old = None
    if old is None or not stat.S_ISREG(old.st_mode):
        umask = os.umask(0)  # reading the umask means setting it; a CLI runs no other thread
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        return
    os.fchmod(fd, stat.S_IMODE(old.st_mode))
    if os.geteuid() == 0:
        os.fchown(fd, old.st_uid, old.st_gid)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; a directory that cannot be opened is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
