"""Who holds a lease or a job, and whether that holder is provably gone.

An *owner* string names one process of one host::

    <host>:<pid>:<start>.<scope>[:<suffix>]

* ``host`` is :func:`socket.gethostname` (cut to 60 characters, never holding ``:``);
* ``pid`` the process id and ``start`` its start time in clock ticks since boot
  (``/proc/<pid>/stat`` field 22): a pid reused by another process has another start time;
* ``scope`` 8 hex digits of a hash of the boot id and the pid namespace: two containers with
  one host name, or one host before and after a reboot, have different scopes, and a pid is
  only meaningful within one scope;
* ``suffix`` whatever the caller adds (a job id), free text.

Where ``/proc`` is missing (not Linux), ``start.scope`` is ``-`` and such owners are never
judged dead: their leases lapse by their TTL like those of another host.

:func:`holder_is_dead` is deliberately one-sided: True only when the owner belongs to this
host, pid namespace and boot and its process is gone (no such pid, a zombie, or the pid now
belongs to a process started at another time). Anything else (another host, a live
process, an owner it cannot parse, an owner written by an older killsync) is False, and the
holder's lease or job is taken over only when it expires.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
HOST_CHARS = 60  # owners live in 200-character columns next to a suffix
PID_MAX_LIMIT = 1 << 22  # Linux's ceiling for pid_max: a larger "pid" is no process id
UNKNOWN = "-"  # start.scope where /proc cannot tell (not Linux)
_ENDED = {"Z", "X"}  # zombie, dead: the process has stopped running
_OWNER = re.compile(
    r"(?P<host>[^:]+):(?P<pid>[0-9]+):(?P<token>[0-9]+\.[0-9a-f]{8}|-)(?::.*)?", re.DOTALL
)


@dataclass(frozen=True)
class Holder:
    """A parsed owner: which process of which host (see the module docstring)."""

    host: str
    pid: int
    token: str  # "<start>.<scope>", or UNKNOWN


def this_host() -> str:
    """This host's name as it appears in owners."""
    return socket.gethostname().replace(":", "_")[:HOST_CHARS] or "localhost"


def this_owner(suffix: str | None = None) -> str:
    """The owner string of this process, with ``:suffix`` appended when given."""
    base = _owner_of(os.getpid())  # keyed by pid: a forked child gets its own
    return base if suffix is None else f"{base}:{suffix}"


@functools.lru_cache(maxsize=4)
def _owner_of(pid: int) -> str:
    return f"{this_host()}:{pid}:{_token_of(pid) or UNKNOWN}"


def parse_owner(owner: str) -> Holder | None:
    """The holder an owner string names, or None when it is not in the format above."""
    match = _OWNER.fullmatch(owner)
    if match is None or not 0 < int(match["pid"]) <= PID_MAX_LIMIT:
        return None
    return Holder(match["host"], int(match["pid"]), match["token"])


def holder_is_dead(owner: str) -> bool:
    """True only when ``owner`` is a process of this host (and boot, and pid namespace)
    that provably no longer runs; False for live, foreign or unparseable owners."""
    holder = parse_owner(owner)
    if holder is None or holder.token == UNKNOWN or holder.host != this_host():
        return False
    start, _, scope = holder.token.partition(".")
    if scope != _scope():
        return False  # another container, or a boot before this one: pids say nothing
    fields = _stat_fields(holder.pid)
    if fields is None:  # unreadable (hidepid) or gone: only "no such process" is a proof
        return not _pid_exists(holder.pid)
    return fields[0] in _ENDED or fields[19] != start  # a zombie, or the pid was reused


def _pid_exists(pid: int) -> bool:
    """Whether any process (even one we may not signal) has this pid (1..PID_MAX_LIMIT)."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH  # EPERM: it exists, it is just not ours
    return True


def _token_of(pid: int) -> str | None:
    """``<start>.<scope>`` of a process; None where ``/proc`` cannot tell."""
    fields = _stat_fields(pid)
    scope = _scope()
    return None if fields is None or scope is None else f"{fields[19]}.{scope}"


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (the state) on; None when it cannot be read."""
    try:
        stat = (PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields if len(fields) >= 20 and fields[19].isdigit() else None


@functools.cache
def _scope() -> str | None:
    """8 hex digits naming this boot and pid namespace (None where /proc cannot tell)."""
    try:
        boot_id = (PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = str((PROC / "self/ns/pid").readlink())
    except OSError:
        return None
    return hashlib.sha256(f"{boot_id}|{namespace}".encode()).hexdigest()[:8]
