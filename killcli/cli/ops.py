"""`killsync queue`, `worker` and `stats`: the unattended path and its view."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import nullcontext
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table

from killcli.cli import params
from killcli.cli.charts import activity_chart
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.cli.params import JsonFlag
from killcli.cli.progressview import running_table, stamped, wait_line
from killcli.console import is_interactive, make_console
from killcli.esi.ratelimit import WaitEvent
from killcli.queue import open_broker
from killcli.queue.base import Broker
from killcli.scheduler import run_queue
from killcli.service import WorkerOptions, run_worker
from killcli.signals import stop_on_signals
from killcli.stats import stats_report
from killcli.sync.progress import ProgressRegistry
from killcli.textsafe import sanitize
from killcli.worker import DEFAULT_CONCURRENCY, JobReport, check_settled


def _broker(app_ctx: AppContext) -> Broker:
    broker = open_broker(app_ctx.settings, app_ctx.database())
    app_ctx.on_close(broker.close)
    return broker


def queue_cmd(
    ctx: typer.Context,
    character: Annotated[
        list[int] | None,
        typer.Option(
            "--character",
            help="Queue these characters now (repeatable).",
            show_default=False,
            parser=params.character_id,
        ),
    ] = None,
    corporation: Annotated[
        list[int] | None,
        typer.Option(
            "--corporation",
            help="Queue these tracked corporations now (repeatable).",
            show_default=False,
            parser=params.corporation_id,
        ),
    ] = None,
    all_active: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Queue every active character and corporation now (cadence and list cache "
            "ignored).",
        ),
    ] = False,
    full: Annotated[bool, typer.Option("--full", help="Jobs walk every page.")] = False,
    priority: Annotated[
        int | None,
        typer.Option(
            "--priority", help="0-10, higher first.", show_default=False, parser=params.priority
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what is due, queue nothing.")
    ] = False,
    as_json: JsonFlag = False,
    one_line: Annotated[
        bool, typer.Option("--one-line", help="One line of output (cron).")
    ] = False,
    quiet_line: Annotated[
        bool,
        typer.Option("--quiet", hidden=True),  # before 0.2, clashed with the root's -q
    ] = False,
) -> None:
    """Queue every character and corporation that is due for a sync (cron calls this)."""
    app_ctx = app_context(ctx)
    result = run_queue(
        app_ctx.database(),
        _broker(app_ctx),
        character_ids=character or (),
        corporation_ids=corporation or (),
        full=full,
        priority=priority,
        dry_run=dry_run,
        all_active=all_active,
        cadence=app_ctx.settings.cadence_plan,
    )
    if result.skipped_lock:
        app_ctx.info("another `killsync queue` is running: nothing queued")
        return
    if as_json:
        print_json("queue", result.as_dict())
    elif one_line or quiet_line:
        typer.echo(
            f"queued {result.published} of {result.lists_due} due "
            f"({result.already_queued} already queued)"
        )
    else:
        table = Table(
            "id",
            "name",
            "list",
            "why",
            "priority",
            "tier",
            title=("due (dry run)" if dry_run else f"queued {result.published}"),
        )
        rows = [
            (c.character_id, c.name, "character", c.reason, c.priority, c.tier) for c in result.due
        ]
        rows += [
            (c.corporation_id, c.name, "corporation", c.reason, c.priority, c.tier)
            for c in result.corporations
        ]
        for owner_id, name, kind, reason, level, tier in rows:
            table.add_row(str(owner_id), sanitize(name), kind, sanitize(reason), str(level), tier)
        make_console(stderr=False).print(table)


def _announce_signal(app_ctx: AppContext) -> Callable[[int, int], None]:
    def announce(signum: int, count: int) -> None:
        if count > 1:  # second signal: leave now; unsettled jobs go back to the queue
            app_ctx.console.print("killsync: exiting now")
        else:
            app_ctx.console.print(
                f"killsync: {signal.Signals(signum).name}: finishing "
                "running jobs (again to exit now)"
            )

    return announce


IDLE_STATUSES = frozenset({"not_modified", "cached"})
IDLE_SUMMARY_S = 10.0


class _LiveView:
    """A Rich live view on a terminal (running syncs, the budget wait, finished jobs);
    otherwise one log line per job that did something, one per long budget wait, and, every
    :data:`IDLE_SUMMARY_S`, one line counting the jobs that found nothing new (a busy
    install re-syncs hundreds a second; ``-v`` logs each of them)."""

    def __init__(self, app_ctx: AppContext) -> None:
        self.app_ctx = app_ctx
        self.reports: deque[JobReport] = deque(maxlen=20)
        self.idle: Counter[str] = Counter()
        self.idle_since = time.monotonic()
        self.lock = threading.Lock()
        self.live: Live | None = None
        live = is_interactive() and app_ctx.verbosity >= 0
        quiet = app_ctx.verbosity < 0
        self.registry = ProgressRegistry(on_notice=None if live or quiet else self._log_wait)
        if live:  # redrawn at each refresh: a sync that waits for the budget still moves
            self.live = Live(
                console=app_ctx.console, refresh_per_second=2, get_renderable=self.renderable
            )

    def report(self, report: JobReport) -> None:
        with self.lock:
            self.reports.append(report)
        if self.live is not None or self.app_ctx.verbosity < 0:
            return
        if (
            report.outcome == "done"
            and report.status in IDLE_STATUSES
            and self.app_ctx.verbosity == 0
        ):
            with self.lock:
                self.idle[report.status] += 1
                due = time.monotonic() - self.idle_since >= IDLE_SUMMARY_S
            if due:
                self.flush_idle()
            return
        self._log(sanitize(report.line()))

    def flush_idle(self) -> None:
        """Log the count of jobs that found nothing new since the last such line."""
        with self.lock:
            counts, self.idle = self.idle, Counter()
            seconds = time.monotonic() - self.idle_since
            self.idle_since = time.monotonic()
        if counts:
            parts = ", ".join(
                f"{n} {status.replace('_', ' ')}" for status, n in sorted(counts.items())
            )
            self._log(f"{counts.total()} syncs found nothing new in {seconds:.0f} s ({parts})")

    def renderable(self) -> RenderableType:
        """What the live view shows now: running syncs, the wait in force, finished jobs."""
        snapshot = self.registry.snapshot()
        wait = wait_line(snapshot)
        parts: list[RenderableType] = [running_table(snapshot), self._table()]
        if wait is not None:
            parts.insert(1, wait)
        return Group("killsync worker (Ctrl-C to stop)", *parts)

    def _log_wait(self, event: WaitEvent) -> None:
        self._log(event.message)

    def _log(self, line: str) -> None:
        self.app_ctx.console.print(stamped(line))

    def _table(self) -> Table:
        table = Table("list", "status", "new", "pending", "s", "outcome", title="finished jobs")
        with self.lock:
            reports = list(self.reports)
        for r in reports:
            table.add_row(
                f"{sanitize(r.name)} ({r.owner})",
                r.status,
                str(r.new),
                str(r.pending),
                f"{r.elapsed_s:.1f}",
                sanitize(r.outcome),
            )
        return table


def worker_cmd(
    ctx: typer.Context,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            help=f"Character syncs at once (1-{params.MAX_CONCURRENCY}).",
            parser=params.concurrency,
        ),
    ] = DEFAULT_CONCURRENCY,
    drain: Annotated[bool, typer.Option("--drain", help="Exit when the queue is empty.")] = False,
    max_jobs: Annotated[
        int | None,
        typer.Option(
            "--max-jobs", help="Exit after this many jobs.", show_default=False, parser=params.count
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics on this port (1-65535).",
            show_default=False,
            parser=params.port,
        ),
    ] = None,
) -> None:
    """Consume jobs: refresh tokens, sync characters, save killmails, emit events."""
    app_ctx = app_context(ctx)
    broker = _broker(app_ctx)
    view = _LiveView(app_ctx)
    options = WorkerOptions(
        concurrency=concurrency, drain=drain, max_jobs=max_jobs, metrics_port=metrics_port
    )
    with (
        stop_on_signals(force="exit", on_signal=_announce_signal(app_ctx)) as stop,
        view.live if view.live is not None else nullcontext(),
    ):
        result = run_worker(
            app_ctx.settings,
            app_ctx.database(),
            broker,
            options,
            stop=stop,
            progress=view.registry,
            on_report=view.report,
            on_problem=app_ctx.console.print,
        )
    view.flush_idle()
    helped = (
        f"; {result.bodies_for_others} bodies fetched for workers of other egresses"
        if result.bodies_for_others
        else ""
    )
    app_ctx.info(
        f"worker stopped: {result.handled} jobs ({result.done} done, {result.retried} "
        f"retried, {result.dead_lettered} dead){helped}"
    )
    if drain or max_jobs is not None:  # a run that ends by itself: exit 3 if work is left
        check_settled(result)


def _stats_data(app_ctx: AppContext, broker: Broker) -> dict[str, Any]:
    return stats_report(app_ctx.database(), broker, cadence=app_ctx.settings.cadence_plan)


def _esi_line(workers: list[dict[str, Any]]) -> str:
    """The freshest worker's view of ESI: shared buckets and the error limit."""
    esi = next((w["esi"] for w in workers if w["esi"]), None)
    if esi is None:
        return "no worker reported yet"
    parts = [f"{b['bucket']} {b['available']}/{b['limit']}" for b in esi["buckets"]]
    if esi["character_buckets"]:
        parts.append(
            f"{esi['character_buckets']} character buckets, lowest "
            f"{esi['character_buckets_lowest']}"
        )
    parts.append(f"error limit {esi['error_limit_remain']}")
    return ", ".join(parts)


def _egress_line(budgets: list[dict[str, Any]]) -> str:
    """Each egress's shared per-IP budgets: tokens in use of the limit, holders, blocks."""
    parts = []
    for b in budgets:
        blocked = f", blocked {b['blocked_for_s']:.0f} s" if b["blocked_for_s"] else ""
        if b["budget"] == "error-limit":
            parts.append(f"{b['egress']} error limit{blocked or ' ok'}")
            continue
        limit = "?" if b["limit"] is None else str(b["limit"])
        parts.append(
            f"{b['egress']} {b['budget']} {b['in_use']}/{limit} in use by "
            f"{b['holders']} worker{'s' if b['holders'] != 1 else ''}{blocked}"
        )
    return sanitize("; ".join(parts)) or "no shared budget used yet"


def _cadence_line(cadence: dict[str, Any]) -> str:
    """Characters per tier and the list requests a day the cadence saves."""
    tiers = ", ".join(f"{t['tier']} {t['characters']}" for t in cadence["tiers"])
    return (
        f"{tiers}; saves ~{cadence['saved_requests_per_day']:,.0f} list requests/day "
        f"(vs. every {cadence['base_interval_s'] // 60} min)"
    )


def _render_stats(data: dict[str, Any]) -> Table:
    q = data["queue"]
    table = Table(show_header=False, title="killsync")
    for label, value in [
        (
            "queue",
            f"{q['ready']} ready, {q['delayed']} delayed, {q['running']} running, "
            f"{q['consumers']} consumers, {q['dead_letters']} dead letters",
        ),
        (
            "characters",
            ", ".join(f"{k} {v}" for k, v in data["characters_by_status"].items()) or "none",
        ),
        (
            "corporations",
            ", ".join(f"{k} {v}" for k, v in data["corporations_by_status"].items()) or "none",
        ),
        ("oldest last sync", str(data["oldest_last_sync_at"] or "-")[:19]),
        (
            "killmails",
            f"{data['killmails_total']} total, {data['killmails_last_hour']} last "
            f"hour, {data['killmails_last_day']} last day",
        ),
        ("pending bodies", str(data["pending_total"])),
        ("cadence", _cadence_line(data["cadence"])),
        ("workers", str(len(data["workers"]))),
        ("ESI (last seen)", _esi_line(data["workers"])),
        ("ESI budget (shared)", _egress_line(data["egress"])),
    ]:
        table.add_row(label, value)
    return table


def stats_cmd(
    ctx: typer.Context,
    as_json: JsonFlag = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            help=f"Refresh every N seconds (at least {params.MIN_WATCH_S:g}).",
            show_default=False,
            parser=params.interval_s(),
        ),
    ] = None,
) -> None:
    """Queue depth, characters by status, killmail counts, per-character table."""
    app_ctx = app_context(ctx)
    broker = _broker(app_ctx)  # once: --watch must not open a connection per refresh
    if as_json:
        print_json("stats", _stats_data(app_ctx, broker))
        return
    out = make_console(stderr=False)
    while True:
        data = _stats_data(app_ctx, broker)
        out.print(_render_stats(data))
        chars = Table("id", "name", "status", "last sync", "killmails", "pending", "last error")
        for c in data["characters"][:50]:
            chars.add_row(
                str(c["character_id"]),
                sanitize(c["name"]),
                c["status"],
                str(c["last_sync_at"] or "-")[:19],
                str(c["killmails"]),
                str(c["pending"]),
                sanitize((c["last_error"] or "")[:50]),
            )
        out.print(chars)
        if data["activity"] is not None:
            out.print(activity_chart(data["activity"]))
        if watch is None:
            return
        time.sleep(watch)


def register(root: typer.Typer) -> None:
    root.command(
        "queue",
        epilog=examples(
            "killsync queue --one-line         # from cron, every 5 minutes",
            "killsync queue --character 2112345678 --priority 10",
            "killsync queue --corporation 98000001",
            "killsync queue --all              # everyone now, whatever the cadence",
            "killsync queue --dry-run --json",
        ),
    )(queue_cmd)
    root.command(
        "worker",
        epilog=examples(
            "killsync worker --concurrency 8 --metrics-port 9464",
            "killsync worker --drain           # empty the queue, then exit",
        ),
    )(worker_cmd)
    root.command(
        "stats",
        epilog=examples("killsync stats", "killsync stats --json", "killsync stats --watch 5"),
    )(stats_cmd)
