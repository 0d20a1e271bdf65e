"""Private files and directories, whatever the umask.

``mkdir`` and ``open`` honour the process umask, which usually leaves new files readable
by everyone (0644/0755). The data directory holds encrypted tokens, owner hashes and the
key that decrypts them, so what killsync creates is 0700 (directories) and 0600 (files):
created with that mode and then ``chmod``-ed, since a umask such as 0277 would take bits
away. What already exists is left as it is: an operator may have chosen its mode.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True
