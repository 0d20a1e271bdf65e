"""The worker service: everything a `killsync worker` process runs, wired in one place.

:func:`run_worker` builds (or borrows) the runtime, serves metrics, starts the event pump,
keeps the worker's status row, runs the :class:`~killcli.worker.Worker` until it stops and
closes what it built. The CLI adds only what a person sees (the live view, log lines,
signals); the demo, the benchmarks and the tests call the same function, so the worker they
exercise is the one operators run.

Events leave on the pump's own thread: a job that saved new killmails only wakes it, so a
slow webhook or relay never delays a job's ack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from killcli.config import Settings
from killcli.db import Database
from killcli.events.pump import EventPump
from killcli.metrics import WorkerMetrics
from killcli.queue.base import Broker
from killcli.runtime import DEFAULT_BODY_CONCURRENCY, Runtime, build_runtime
from killcli.sync.progress import ProgressRegistry
from killcli.worker import DEFAULT_CONCURRENCY, JobReport, Worker, WorkerResult
from killcli.workerstatus import StatusReporter


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker run behaves (the `killsync worker` options)."""

    concurrency: int = DEFAULT_CONCURRENCY  # character syncs at once
    drain: bool = False  # stop when the queue is empty
    max_jobs: int | None = None  # stop after this many jobs
    metrics_port: int | None = None  # serve Prometheus metrics here
    events: bool = True  # relay events (fleets) and post webhooks
    body_concurrency: int = DEFAULT_BODY_CONCURRENCY  # body requests at once


def run_worker(
    settings: Settings,
    db: Database,
    broker: Broker,
    options: WorkerOptions,
    *,
    stop: threading.Event,
    runtime: Runtime | None = None,
    progress: ProgressRegistry | None = None,
    on_report: Callable[[JobReport], None] | None = None,
    on_problem: Callable[[str], None] = lambda message: None,
) -> WorkerResult:
    """Consume jobs from ``broker`` until ``stop`` is set (or the queue drains, or
    ``max_jobs``); returns the counts. A ``runtime`` passed in is used and left open (a
    caller running several rounds); otherwise one is built and closed. ``progress`` gets
    every running sync and budget wait (the live view); ``on_problem`` gets lines about
    events that failed to leave (they wait in the outbox for the next round)."""
    owned = runtime is None
    if runtime is None:
        runtime = build_runtime(
            settings,
            db,
            body_concurrency=options.body_concurrency,
            list_concurrency=options.concurrency,
            on_wait=progress.waiting if progress is not None else None,
        )
    pump: EventPump | None = None
    try:
        if progress is not None:
            progress.attach(runtime.esi.limiter)
        metrics = WorkerMetrics()
        if options.metrics_port is not None:
            metrics.serve(options.metrics_port)
        if options.events:
            pump = EventPump(settings, db, on_problem=on_problem)
            pump.start()
        worker = Worker(
            runtime,
            broker,
            on_report=on_report,
            metrics=metrics,
            on_new_killmails=pump.wake if pump is not None else None,
            progress=progress,
            status=StatusReporter(db, runtime.esi.limiter),
        )
        return worker.run(
            concurrency=options.concurrency,
            stop=stop,
            drain=options.drain,
            max_jobs=options.max_jobs,
        )
    finally:
        if pump is not None:
            pump.close()  # the last jobs' events leave before the worker exits
        if owned:
            runtime.close()
