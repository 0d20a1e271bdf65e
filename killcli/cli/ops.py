"""`killsync queue`, `worker` and `stats`: the unattended path and its view."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.console import is_interactive, make_console
from killcli.events.pump import EventPump
from killcli.metrics import WorkerMetrics
from killcli.queue import open_broker
from killcli.queue.base import Broker
from killcli.runtime import build_runtime
from killcli.scheduler import run_queue
from killcli.stats import collect_stats
from killcli.textsafe import sanitize
from killcli.worker import JobReport, Worker, check_settled
from killcli.workerstatus import StatusReporter, live_workers


def _broker(app_ctx: AppContext) -> Broker:
    broker = open_broker(app_ctx.settings, app_ctx.database())
    app_ctx.on_close(broker.close)
    return broker


def queue_cmd(
    ctx: typer.Context,
    character: Annotated[list[int] | None, typer.Option(
        "--character", help="Queue these characters now (repeatable).", show_default=False,
        parser=params.character_id)] = None,
    full: Annotated[bool, typer.Option("--full", help="Jobs walk every page.")] = False,
    priority: Annotated[int | None, typer.Option("--priority", help="0-10, higher first.",
                                                 show_default=False,
                                                 parser=params.priority)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what is due, queue "
                                          "nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet_line: Annotated[bool, typer.Option("--quiet", help="One line of output (cron).")
                          ] = False,
) -> None:
    """Queue every character that is due for a sync (cron calls this)."""
    app_ctx = app_context(ctx)
    result = run_queue(app_ctx.database(), _broker(app_ctx), character_ids=character or (),
                       full=full, priority=priority, dry_run=dry_run)
    if result.skipped_lock:
        app_ctx.info("another `killsync queue` is running: nothing queued")
        return
    rows: list[dict[str, Any]] = [
        {"character_id": c.character_id, "name": c.name, "reason": c.reason,
         "priority": c.priority} for c in result.due]
    summary = {"due": len(result.due), "queued": result.published,
               "already_queued": result.already_queued, "dry_run": dry_run}
    if as_json:
        print_json("queue", {**summary, "characters": rows})
    elif quiet_line:
        typer.echo(f"queued {result.published} of {len(result.due)} due "
                   f"({result.already_queued} already queued)")
    else:
        table = Table("id", "name", "why", "priority",
                      title=("due (dry run)" if dry_run else f"queued {result.published}"))
        for row in rows:
            table.add_row(str(row["character_id"]), sanitize(row["name"]),
                          sanitize(row["reason"]), str(row["priority"]))
        make_console(stderr=False).print(table)


def _install_signals(stop: threading.Event, app_ctx: AppContext) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():  # second signal: leave now; unsettled jobs go back to the queue
            app_ctx.console.print("killsync: exiting now")
            os._exit(130)
        stop.set()
        app_ctx.console.print(f"killsync: {signal.Signals(signum).name}: finishing running "
                              "jobs (again to exit now)")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class _LiveView:
    """A Rich live table on a terminal; one log line per job otherwise."""

    def __init__(self, app_ctx: AppContext) -> None:
        self.app_ctx = app_ctx
        self.reports: list[JobReport] = []
        self.lock = threading.Lock()
        self.live: Live | None = None
        if is_interactive() and app_ctx.verbosity >= 0:
            self.live = Live(self._table(), console=app_ctx.console, refresh_per_second=2)

    def report(self, report: JobReport) -> None:
        with self.lock:
            self.reports = [*self.reports[-19:], report]
            if self.live is not None:
                self.live.update(self._table())
                return
        if self.app_ctx.verbosity >= 0:
            self.app_ctx.console.print(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {sanitize(report.line())}")

    def _table(self) -> Table:
        table = Table("character", "status", "new", "pending", "s", "outcome",
                      title="killsync worker (Ctrl-C to stop)")
        for r in self.reports:
            table.add_row(f"{sanitize(r.name)} ({r.character_id})", r.status, str(r.new),
                          str(r.pending), f"{r.elapsed_s:.1f}", sanitize(r.outcome))
        return table


def worker_cmd(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", "-c", help=f"Character syncs at once (1-{params.MAX_CONCURRENCY}).",
        parser=params.concurrency)] = 4,
    drain: Annotated[bool, typer.Option("--drain", help="Exit when the queue is empty.")
                     ] = False,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", help="Exit after this many "
                                                 "jobs.", show_default=False,
                                                 parser=params.count)] = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Serve Prometheus"
                                                     " metrics on this port (1-65535).",
                                                     show_default=False,
                                                     parser=params.port)] = None,
) -> None:
    """Consume jobs: refresh tokens, sync characters, save killmails, emit events."""
    app_ctx = app_context(ctx)
    broker = _broker(app_ctx)
    runtime = build_runtime(app_ctx.settings, app_ctx.database(),
                            body_concurrency=max(8, concurrency * 4))
    app_ctx.on_close(runtime.close)
    metrics = WorkerMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    view = _LiveView(app_ctx)
    pump = EventPump(app_ctx.settings, app_ctx.database(), on_problem=app_ctx.console.print)
    pump.start()
    app_ctx.on_close(pump.close)
    worker = Worker(runtime, broker, on_report=view.report, metrics=metrics,
                    after_job=pump.pump,
                    status=StatusReporter(app_ctx.database(), runtime.esi.limiter))
    stop = threading.Event()
    _install_signals(stop, app_ctx)
    if view.live is not None:
        with view.live:
            result = worker.run(concurrency=concurrency, stop=stop, drain=drain,
                                max_jobs=max_jobs)
    else:
        result = worker.run(concurrency=concurrency, stop=stop, drain=drain, max_jobs=max_jobs)
    app_ctx.info(f"worker stopped: {result.handled} jobs ({result.done} done, {result.retried} "
                 f"retried, {result.dead_lettered} dead)")
    if drain or max_jobs is not None:  # a run that ends by itself: exit 3 if work is left
        check_settled(result)


def _stats_data(app_ctx: AppContext, broker: Broker) -> dict[str, Any]:
    db = app_ctx.database()
    data = collect_stats(db).as_dict()
    data["queue"] = broker.stats().__dict__
    data["workers"] = live_workers(db)
    return data


def _esi_line(workers: list[dict[str, Any]]) -> str:
    """The freshest worker's view of ESI: shared buckets and the error limit."""
    esi = next((w["esi"] for w in workers if w["esi"]), None)
    if esi is None:
        return "no worker reported yet"
    parts = [f"{b['bucket']} {b['available']}/{b['limit']}" for b in esi["buckets"]]
    if esi["character_buckets"]:
        parts.append(f"{esi['character_buckets']} character buckets, lowest "
                     f"{esi['character_buckets_lowest']}")
    parts.append(f"error limit {esi['error_limit_remain']}")
    return ", ".join(parts)


def _render_stats(data: dict[str, Any]) -> Table:
    q = data["queue"]
    table = Table(show_header=False, title="killsync")
    for label, value in [
        ("queue", f"{q['ready']} ready, {q['delayed']} delayed, {q['running']} running, "
                  f"{q['consumers']} consumers, {q['dead_letters']} dead letters"),
        ("characters", ", ".join(f"{k} {v}" for k, v in data["characters_by_status"].items())
         or "none"),
        ("oldest last sync", str(data["oldest_last_sync_at"] or "-")[:19]),
        ("killmails", f"{data['killmails_total']} total, {data['killmails_last_hour']} last "
                      f"hour, {data['killmails_last_day']} last day"),
        ("pending bodies", str(data["pending_total"])),
        ("workers", str(len(data["workers"]))),
        ("ESI (last seen)", _esi_line(data["workers"])),
    ]:
        table.add_row(label, value)
    return table


def stats_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[float | None, typer.Option(
        "--watch", help=f"Refresh every N seconds (at least {params.MIN_WATCH_S:g}).",
        show_default=False, parser=params.interval_s())] = None,
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
            chars.add_row(str(c["character_id"]), sanitize(c["name"]), c["status"],
                          str(c["last_sync_at"] or "-")[:19], str(c["killmails"]),
                          str(c["pending"]), sanitize((c["last_error"] or "")[:50]))
        out.print(chars)
        if watch is None:
            return
        time.sleep(watch)


def register(root: typer.Typer) -> None:
    root.command("queue", epilog=examples(
        "killsync queue --quiet            # from cron, every 5 minutes",
        "killsync queue --character 2112345678 --priority 10",
        "killsync queue --dry-run --json"))(queue_cmd)
    root.command("worker", epilog=examples(
        "killsync worker --concurrency 8 --metrics-port 9464",
        "killsync worker --drain           # empty the queue, then exit"))(worker_cmd)
    root.command("stats", epilog=examples("killsync stats", "killsync stats --json",
                                          "killsync stats --watch 5"))(stats_cmd)
