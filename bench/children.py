"""Child processes of a benchmark: `killsync` commands with timeouts, killed on exit.

Every child runs in its own session (process group), so killing the group also ends
anything it started, and a Ctrl-C in the terminal reaches only the benchmark, which then
ends its children itself. :class:`Children` is a context manager: whatever is still
running when the block ends (normally, by an exception or by SIGTERM, see
:func:`exit_on_sigterm`) gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

ROOT = Path(__file__).resolve().parents[1]
#: The interpreter running the bench (the project's venv); children import killcli from
#: ROOT (their working directory and PYTHONPATH), so a copy of another revision with
#: this bench in it measures that revision.
PYTHON = Path(sys.executable)
GRACE_S = 5.0
POLL_S = 0.05
TAIL_LINES = 6


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks (and :class:`Children`) run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def child_environ(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any KILLSYNC_* of the caller, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILLSYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(settings)
    return env


@dataclass(frozen=True)
class Finished:
    """How a child ended: exit code (None: killed by the timeout), seconds, stderr tail, and
    (from `Children.run`) the CPU seconds it used."""

    name: str
    exit_code: int | None
    seconds: float
    tail: str
    cpu_s: float | None = None

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


@dataclass
class Child:
    """One running `killsync` command and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-TAIL_LINES:])


class Children:
    """Starts `python -m killcli ...` children and makes sure none outlives the bench."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_all()

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(PYTHON), "-m", "killcli", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, process, log, time.monotonic())
        self.running.append(child)
        return child

    def wait(self, child: Child, deadline: float) -> Finished:
        """Wait until the child exits or ``deadline`` (monotonic) passes; then kill it."""
        try:
            code: int | None = child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._kill(child)
            code = None
        if child in self.running:
            self.running.remove(child)
        return Finished(child.name, code, time.monotonic() - child.started, child.tail())

    def wait_all(self, children: list[Child], deadline: float) -> list[Finished]:
        """Wait for every child (each one's seconds end when it exits, whichever order)."""
        ended: dict[int, float] = {}
        while len(ended) < len(children) and time.monotonic() < deadline:
            for child in children:
                if id(child) not in ended and child.process.poll() is not None:
                    ended[id(child)] = time.monotonic()
            time.sleep(POLL_S)
        done = [self.wait(child, deadline) for child in children]
        return [
            dataclasses.replace(f, seconds=ended[id(c)] - c.started) if id(c) in ended else f
            for c, f in zip(children, done, strict=True)
        ]

    def run(self, name: str, args: list[str], env: dict[str, str], timeout_s: float) -> Finished:
        """Start a child and wait for it (at most ``timeout_s``)."""
        before = _children_cpu_s()
        done = self.wait(self.start(name, args, env), time.monotonic() + timeout_s)
        return dataclasses.replace(done, cpu_s=_children_cpu_s() - before)

    def sigkill(self, child: Child) -> None:
        """``kill -9`` of the child itself (not its group): what an OOM killer does."""
        child.process.send_signal(signal.SIGKILL)

    def kill_all(self) -> None:
        for child in list(self.running):
            self._kill(child)
        self.running.clear()

    def _kill(self, child: Child) -> None:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(GRACE_S)
            if child.process.returncode is not None:
                return
        print(f"bench: could not end {child.name} (pid {child.process.pid})", file=sys.stderr)


def _children_cpu_s() -> float:
    """User + system seconds of every child reaped so far (one at a time in `run`)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + system seconds a running process used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delete_rabbit_queues(amqp_url: str, queue_name: str) -> None:
    """Delete a run's RabbitMQ topology; best effort: never hides the run's result."""
    import pika  # noqa: PLC0415 - only PostgreSQL runs use RabbitMQ

    from killcli.queue.rabbit_topology import Topology  # noqa: PLC0415

    with contextlib.suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            Topology(queue_name).delete(connection.channel())
        finally:
            connection.close()
