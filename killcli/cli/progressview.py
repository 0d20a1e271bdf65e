"""Drawing the progress registry (:mod:`killcli.sync.progress`): `sync-user`'s bars and the
running syncs of the worker's live view.

Both poll a :class:`~killcli.sync.progress.ProgressSnapshot` when Rich refreshes, so a sync
that waits for the budget still moves the display: its wait counts down on a line of its
own and the rate falls, instead of a frozen bar with the last burst's speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from killcli.console import PlainTextColumn, is_interactive
from killcli.sync.progress import ProgressRegistry, ProgressSnapshot, SyncState, SyncTracker
from killcli.textsafe import sanitize

UNKNOWN = "-"


def count_bar(console: Console, *, show: bool, unit: str) -> Progress:
    """A bar of a long count (rows imported, killmails valued): what, bar, count, time.
    Drawn only when ``show`` and stderr is a terminal."""
    columns = (
        PlainTextColumn("{task.description}"),
        BarColumn(),
        PlainTextColumn("{task.completed} " + unit),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, disable=not (show and is_interactive()))


def stamped(line: str) -> str:
    """A log line as the worker and `sync-user` print it without a terminal."""
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}"


def format_rate(rate: float | None, unit: str) -> str:
    """``12.5 killmails/s``; a dash while nothing was measured."""
    return f"{UNKNOWN if rate is None else f'{rate:.1f}'} {unit}/s"


def format_eta(eta_s: float | None) -> str:
    """``0:01:12`` (rounded up: an ETA that says 0 must mean done); a dash when unknown."""
    if eta_s is None:
        return UNKNOWN
    seconds = math.ceil(eta_s)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_bodies(state: SyncState) -> str:
    """``99/145`` killmails done of planned; a dash before the plan."""
    total = state.bodies_total
    return UNKNOWN if total is None else f"{state.bodies_done}/{total}"


class RateColumn(ProgressColumn):
    """The task's ``rate`` field in its ``unit`` per second (never bytes)."""

    def render(self, task: Task) -> Text:
        """E.g. ``12.5 killmails/s``."""
        return Text(format_rate(task.fields.get("rate"), task.fields.get("unit", "items")))


class EtaColumn(ProgressColumn):
    """The task's ``eta_s`` field: the registry's estimate, which knows about the budget."""

    def render(self, task: Task) -> Text:
        """E.g. ``eta 0:01:12``; blank for tasks without an estimate (list pages)."""
        if "eta_s" not in task.fields:
            return Text("")
        return Text(f"eta {format_eta(task.fields['eta_s'])}")


class SyncBars(Progress):
    """Two bars for one sync (list pages, killmails) and a line for the wait in force."""

    def __init__(self, registry: ProgressRegistry, *, console: Console, disable: bool) -> None:
        # Before Rich's constructor: it renders once already.
        self.registry = registry
        self.tracker: SyncTracker | None = None
        super().__init__(
            PlainTextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            EtaColumn(),
            console=console,
            disable=disable,
        )
        self._pages = self.add_task("list pages", total=None, unit="pages")
        self._bodies = self.add_task("killmails", total=None, unit="killmails", eta_s=None)

    def follow(self, tracker: SyncTracker) -> None:
        """Draw this sync (kept after it ends, so the last refresh shows the final counts)."""
        self.tracker = tracker

    def get_renderables(self) -> Iterable[RenderableType]:
        """Rich's hook, at each refresh: bars from the latest state, then the wait line."""
        snapshot = self.registry.snapshot()
        if self.tracker is not None:
            self._update(snapshot, self.tracker.state)
        yield self.make_tasks_table(self.tasks)
        line = wait_line(snapshot, self.tracker.state if self.tracker else None)
        if line is not None:
            yield line

    def _update(self, snapshot: ProgressSnapshot, state: SyncState) -> None:
        now_s = snapshot.now_s
        walked = state.phase == "list" or state.pages_total is not None  # not: list cached
        self.update(
            self._pages,
            completed=state.pages_read,
            total=state.pages_total,
            rate=state.pages_rate(now_s),
            visible=walked,
        )
        saving = " (saving)" if state.phase == "saving" else ""
        self.update(
            self._bodies,
            completed=state.bodies_done,
            total=state.bodies_total,
            description=f"killmails{saving}",
            rate=state.bodies_rate(now_s),
            eta_s=snapshot.eta_s(state),
        )


def wait_line(snapshot: ProgressSnapshot, state: SyncState | None = None) -> Text | None:
    """The limiter's line for the wait holding ``state`` up (any wait without a state)."""
    wait = snapshot.longest_wait if state is None else snapshot.wait_for(state)
    return None if wait is None else Text(sanitize(wait.message(snapshot.now_s)), style="yellow")


def running_table(snapshot: ProgressSnapshot) -> Table:
    """The worker's running syncs: character, phase, pages, killmails, rate, ETA, wait."""
    table = Table(
        "character",
        "phase",
        "pages",
        "killmails",
        "rate",
        "eta",
        "waiting",
        title=f"running: {len(snapshot.syncs)}",
    )
    for state in snapshot.syncs:
        wait = snapshot.wait_for(state)
        pages = f"{state.pages_read}/{state.pages_total or '?'}"
        table.add_row(
            state.label,
            state.phase,
            pages,
            format_bodies(state),
            format_rate(state.bodies_rate(snapshot.now_s), "killmails"),
            format_eta(snapshot.eta_s(state)),
            "" if wait is None else f"{math.ceil(wait.remaining_s(snapshot.now_s))} s",
        )
    return table
