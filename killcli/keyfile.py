"""The generated secret key file, and private (mode 0600) files such as token files.

Without ``KILLSYNC_SECRET_KEY`` the Fernet key lives in ``<home>/secret.key``. It is created
atomically so that concurrent first commands agree on one key: the key is written to a
private temporary file in the same directory (0600, fsynced), then hard-linked to the final
name, which fails if another process got there first, whose key is then read instead. A
reader therefore never sees a half-written key file. The file mechanics are
:mod:`killcli.files`.

Every problem with the file is one :class:`~killcli.errors.ConfigError` line that names the
file, never a key.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from killcli.errors import ConfigError
from killcli.files import (
    flush_durably,
    make_private_dir,
    open_for_writing,
    private_temp,
    sync_directory,
)
from killcli.sso.crypto import check_key, generate_key

MAX_KEY_FILE_BYTES = 64 * 1024  # a key is 44 bytes; anything this large is not a key file
_SEPARATORS = re.compile(r"[,\s]+")
_TEXT = re.compile(r"[\x20-\x7e\t\r\n]*")
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # a FIFO never blocks


def split_keys(text: str) -> list[str]:
    """Keys from a comma- (or whitespace-) separated list, newest first."""
    return [key for key in _SEPARATORS.split(text) if key]


def _error(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"secret key file {path}: {why}",
        hint="restore it from your backup, or set KILLSYNC_SECRET_KEY",
    )


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes (at most MAX_KEY_FILE_BYTES + 1); None when it does not exist."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        if path.is_symlink():
            raise _error(path, "is a link to a missing file") from None
        return None
    except OSError as exc:
        raise _error(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _error(path, "is a directory, not a key file")
        if not stat.S_ISREG(mode):
            raise _error(path, "is not a regular file")
        return os.read(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise _error(path, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_key_file(path: Path) -> list[str] | None:
    """The keys in ``path``, checked; None when the file does not exist."""
    raw = _read_bytes(path)
    if raw is None:
        return None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise _error(path, f"larger than {MAX_KEY_FILE_BYTES} bytes, not a key file")
    text = raw.decode("ascii", errors="replace")  # U+FFFD fails the check below
    if not _TEXT.fullmatch(text):
        raise _error(path, "binary or non-ASCII content, not a key file")
    keys = split_keys(text)
    if not keys:
        raise _error(path, "is empty")
    for position, key in enumerate(keys, start=1):
        check_key(key, position, source=f"secret key file {path}")
    return keys


def load_key_file(path: Path, *, refuse_new: Callable[[], str | None] = lambda: None) -> list[str]:
    """The keys in ``path``; a new key file if there is none, unless ``refuse_new`` says why not.

    ``refuse_new`` is asked only when the file is missing; a reason (e.g. "the database
    holds 12 encrypted values") makes the missing file an error instead of a new key, since
    a new key could never open what the lost one encrypted.
    """
    keys = read_key_file(path)
    if keys is not None:
        return keys
    reason = refuse_new()
    if reason is not None:
        keys = read_key_file(path)  # created by a concurrent first command meanwhile?
        if keys is not None:
            return keys
        raise ConfigError(
            f"secret key file {path} is missing but {reason}",
            hint="restore it from your backup, or set KILLSYNC_SECRET_KEY; "
            "a new key cannot decrypt them",
        )
    return create_key_file(path)


def create_key_file(path: Path) -> list[str]:
    """Write a new key to ``path`` atomically; if another process won, read its key."""
    _make_directory(path.parent)
    try:
        with private_temp(path) as (temp, out):
            out.write(generate_key() + "\n")
            flush_durably(out)
            with contextlib.suppress(FileExistsError):  # a concurrent first command linked
                os.link(temp, path)  # its key first: everyone uses that one
    except OSError as exc:
        raise _error(path, f"cannot create: {exc.strerror or exc}") from None
    sync_directory(path.parent)
    keys = read_key_file(path)
    if keys is None:
        raise _error(path, "vanished right after it was created")
    return keys


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` in a new file of mode 0600.

    A symlink at ``path`` is replaced, never written through, and the old file's mode and
    owner do not carry over. A FIFO or device (``/dev/stdout``) is written in place.
    """
    try:
        with open_for_writing(path) as out:
            out.write(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _make_directory(directory: Path) -> None:
    try:
        make_private_dir(directory)
    except OSError as exc:
        raise ConfigError(
            f"data directory {directory}: cannot create: {exc.strerror or exc}"
        ) from None
