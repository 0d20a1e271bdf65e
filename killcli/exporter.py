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
The mechanics are :func:`killcli.files.open_for_writing`; the link refusal is this module's.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy.orm import Session

from killcli.db import Database
from killcli.db.store import iter_killmail_bodies
from killcli.errors import InputError
from killcli.files import open_for_writing
from killcli.valuation import KillmailValuation
from killcli.values import get_values

ExportFormat = Literal["jsonl", "json"]
STDOUT_NAMES = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
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
    return json.dumps(
        body, ensure_ascii=False, indent=indent, separators=separators, allow_nan=False
    )


def export_killmails(
    db: Database,
    out: IO[str],
    *,
    fmt: ExportFormat = "jsonl",
    character_id: int | None = None,
    corporation_id: int | None = None,
    since: datetime | None = None,
    values: bool = False,
) -> ExportResult:
    """Stream killmails to ``out``; a body that is not standard JSON is skipped and listed.

    ``values``: each record is ``{"killmail": BODY, "value": VALUE}``, the body exactly as
    without it and the stored value (``killmail_values``) or null when there is none.
    """
    result = ExportResult()
    with db.session() as session:
        bodies = iter_killmail_bodies(
            session, character_id=character_id, corporation_id=corporation_id, since=since
        )
        if fmt == "json":
            out.write("[")
        for body, value in _with_values(session, bodies) if values else _plain(bodies):
            try:
                text = dumps_body(body)
            except ValueError as exc:
                result.skip(f"killmail {body.get('killmail_id')}: {exc}")
                continue
            if values:
                shown = None if value is None else value.as_dict()
                text = f'{{"killmail":{text},"value":{json.dumps(shown, separators=(",", ":"))}}}'

            if fmt == "json":
                out.write(",\n" if result.written else "\n")
                out.write(text)
            else:
                out.write(text + "\n")
            result.written += 1
        if fmt == "json":
            out.write("\n]\n" if result.written else "]\n")
    return result


def _plain(bodies: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], None]]:
    return ((body, None) for body in bodies)


def _with_values(
    session: Session, bodies: Iterable[dict[str, Any]], chunk: int = 500
) -> Iterator[tuple[dict[str, Any], KillmailValuation | None]]:
    """Bodies with their stored values, read a chunk of ids at a time."""
    batch: list[dict[str, Any]] = []
    for body in bodies:
        batch.append(body)
        if len(batch) >= chunk:
            yield from _valued(session, batch)
            batch = []
    yield from _valued(session, batch)


def _valued(
    session: Session, batch: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], KillmailValuation | None]]:
    found = get_values(session, (b["killmail_id"] for b in batch))
    return ((b, found.get(b["killmail_id"])) for b in batch)


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
    try:
        _refuse_links_to_files(path)
        with open_for_writing(path, suffix=".partial", shell_like=True) as out:
            yield out
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _refuse_links_to_files(path: Path) -> None:
    """A symbolic link is followed only to what is written in place (a FIFO, a device)."""
    if not path.is_symlink():
        return
    try:
        real = path.stat().st_mode
    except OSError:
        real = None
    if real is None or stat.S_ISREG(real) or stat.S_ISDIR(real):
        raise InputError(
            f"{path}: is a symbolic link (to {os.path.realpath(path)}); "
            "killsync does not replace a file through a link: give the real path"
        )
