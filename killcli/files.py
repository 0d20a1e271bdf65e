"""Writing files safely: private directories and files, atomic replacement, in-place writes.

The mechanics every writer of killsync shares; what differs per caller (which error to
raise, whether a link is refused, which mode a replaced file gets) stays with the caller:
``killcli.keyfile`` (key and token files), ``killcli.exporter`` (``export --output``) and
``killcli.db.engine`` (the SQLite file).

- **Private** means 0700 for directories and 0600 for files, whatever the umask: created
  with that mode and then ``chmod``-ed, since a umask such as 0277 would take bits away.
  What already exists is left as it is: an operator may have chosen its mode.
- **A temporary file beside a target** has a random name and is opened with
  ``O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC``: nothing planted at that name (a link, a
  file) is ever followed or reused. It is private until it is given its final mode.
- **Replacing** a file writes such a temporary file, flushes and ``fsync``-s it, renames it
  over the target and ``fsync``-s the directory: readers see the old file or the new one,
  never half of one, and a failure leaves the old file untouched. A symbolic link at the
  target is replaced, never written through (refusing it is the caller's choice).
- **In place**: a FIFO, device, terminal or socket (directly or through a link) is opened
  as it is, never created, truncated or renamed. :func:`open_for_writing` picks in place
  or replacing by what is at the path.

Every function raises :class:`OSError`; callers turn it into their own one-line error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IN_PLACE_FLAGS = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC
_TEMP_ATTEMPTS = 10


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700; existing ones are left alone."""
    missing: list[Path] = []
    cursor = path
    while not cursor.exists() and cursor != cursor.parent:
        missing.append(cursor)
        cursor = cursor.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(PRIVATE_DIR_MODE)
        except FileExistsError:  # another process made it first: its mode is its own
            continue
        directory.chmod(PRIVATE_DIR_MODE)


def create_private_file(path: Path) -> bool:
    """Create an empty ``path`` with mode 0600; False when it already exists (left alone).

    ``O_EXCL`` also refuses a planted symbolic link at ``path`` instead of following it.
    """
    try:
        fd = _create_private(path)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _create_private(path: Path) -> int:
    """A new file at ``path`` (never through a link), 0600 whatever the umask."""
    fd = os.open(path, _CREATE_FLAGS, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have taken bits off, never add them
    except OSError:
        os.close(fd)
        raise
    return fd


@contextmanager
def private_temp(path: Path, *, suffix: str = ".tmp") -> Iterator[tuple[Path, IO[str]]]:
    """A new private text file beside ``path``, closed and removed when the block ends.

    The block links or renames it into place (after :func:`flush_durably`); whatever is
    left at the temporary name afterwards, on success or failure, is removed.
    """
    temp, fd = _create_temp(path, suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yield temp, out
    finally:
        temp.unlink(missing_ok=True)


def _create_temp(path: Path, suffix: str) -> tuple[Path, int]:
    for _ in range(_TEMP_ATTEMPTS):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            return temp, _create_private(temp)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(path.parent))


def flush_durably(out: IO[str]) -> None:
    """Flush ``out`` to the disk, not just to the kernel."""
    out.flush()
    os.fsync(out.fileno())


@contextmanager
def open_for_writing(
    path: Path, *, suffix: str = ".tmp", shell_like: bool = False
) -> Iterator[IO[str]]:
    """A text stream onto ``path``: in place (see :func:`open_in_place`) or replacing it.

    A replacement takes effect when the block ends without an error (with one, the
    temporary file is removed and ``path`` is left as it was). The new file is 0600; with
    ``shell_like`` it is what the shell's ``>`` would leave: a read-only file is refused,
    a replaced file keeps its mode (and, run as root, its owner), a new one gets
    ``0666 & ~umask``.
    """
    in_place = open_in_place(path)
    if in_place is not None:
        with in_place as out:
            yield out
        return
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if shell_like and path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    with private_temp(path, suffix=suffix) as (temp, out):
        yield out
        out.flush()
        if shell_like:
            _inherit_mode(out.fileno(), path)
        flush_durably(out)
        temp.replace(path)
    sync_directory(path.parent)


def _inherit_mode(fd: int, path: Path) -> None:
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


def open_in_place(path: Path) -> IO[str] | None:
    """A text stream onto the FIFO, device or socket at ``path`` (links followed).

    None when there is nothing there, or a regular file or a directory (even one swapped
    in between the check and the open): those are replaced, never written in place.
    """
    try:
        if _replaceable(path.stat().st_mode):
            return None
        fd = os.open(path, _IN_PLACE_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        swapped = _replaceable(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if swapped:
        os.close(fd)
        return None
    return os.fdopen(fd, "w", encoding="utf-8")


def _replaceable(mode: int) -> bool:
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def sync_directory(directory: Path) -> None:
    """Make a new name in ``directory`` durable (best effort: not every OS can)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
