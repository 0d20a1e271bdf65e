"""Owner strings and `holder_is_dead`, against real processes of this host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from killcli.holders import holder_is_dead, parse_owner, this_host, this_owner
from tests.conftest import REPO

PRINT_OWNER = (
    "import sys; from killcli.holders import this_owner; "
    "print(this_owner('job-1'), flush=True); sys.stdin.read()"
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


class Child:
    """A Python process that prints its owner and runs until its stdin closes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRINT_OWNER],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.owner = self.proc.stdout.readline().strip()

    def end(self) -> None:
        """Let it exit and reap it: its pid is free again."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture
def child() -> Iterator[Child]:
    made = Child()
    yield made
    if made.proc.poll() is None:
        made.proc.kill()
    made.end()


def dead_owner(suffix: str) -> str:
    """The owner a process of this host had, with ``suffix``; the process is gone now."""
    gone = Child()
    gone.end()
    return f"{gone.owner.removesuffix(':job-1')}:{suffix}"


def with_part(owner: str, index: int, value: str) -> str:
    parts = owner.split(":", 3)
    parts[index] = value
    return ":".join(parts)


def test_this_owner_names_this_process_and_keeps_the_suffix() -> None:
    owner = this_owner("job:with:colons")
    holder = parse_owner(owner)
    assert holder is not None
    assert (holder.host, holder.pid) == (this_host(), os.getpid())
    assert owner.endswith(":job:with:colons")
    assert this_owner() == owner.removesuffix(":job:with:colons")
    assert len(this_owner("j" * 64)) <= 200  # fits leases.owner and jobs.locked_by


def test_a_live_process_is_not_dead(child: Child) -> None:
    assert not holder_is_dead(this_owner())
    assert not holder_is_dead(child.owner)
    assert child.owner != this_owner("job-1")  # another pid, another start time


def test_a_reaped_process_is_dead(child: Child) -> None:
    child.end()
    assert holder_is_dead(child.owner)


def test_a_killed_process_not_reaped_yet_is_dead(child: Child) -> None:
    child.proc.kill()
    deadline = time.monotonic() + 10
    stat = Path(f"/proc/{child.proc.pid}/stat")
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":  # a zombie now
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert holder_is_dead(child.owner)


def test_a_pid_running_another_process_is_dead_for_the_old_owner() -> None:
    """The pid is alive but started at another time: the owner's process is gone and the
    pid was reused (here: our own pid, named with another start time)."""
    mine = this_owner("job-1")
    start, _, scope = mine.split(":")[2].partition(".")
    assert holder_is_dead(with_part(mine, 2, f"{int(start) + 1}.{scope}"))
    assert not holder_is_dead(mine)


def test_another_host_is_never_judged(child: Child) -> None:
    child.end()
    assert not holder_is_dead(with_part(child.owner, 0, "another-host"))


def test_another_boot_or_pid_namespace_is_never_judged(child: Child) -> None:
    child.end()
    start = child.owner.split(":")[2].partition(".")[0]
    assert not holder_is_dead(with_part(child.owner, 2, f"{start}.0badc0de"))


@pytest.mark.parametrize(
    "owner",
    [
        "",
        "garbage",
        "vm",
        f"{this_host()}:",
        f"{this_host()}:123",
        f"{this_host()}:123:job-abc",  # the format of killsync before owners had start times
        f"{this_host()}:0:1.00000000",
        f"{this_host()}:-5:1.00000000",
        f"{this_host()}:123:-",
        f"{this_host()}:123:-:job",  # no /proc where it ran
        f"{this_host()}:123:12.abcdefgh",
        f"{this_host()}:99999999999999:1.00000000",
        f"{this_host()}:{2**22 + 1}:1.00000000",
        "job-id-only",
    ],
)
def test_malformed_or_unknowable_owners_are_never_dead(owner: str) -> None:
    assert not holder_is_dead(owner)
