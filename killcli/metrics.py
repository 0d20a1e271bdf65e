"""Prometheus metrics of a worker (`killsync worker --metrics-port P`).

One registry per worker process (no global default registry), served on 127.0.0.1 or the
address given. Names and labels are documented in ``examples/metrics.md``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from killcli.errors import UsageError
from killcli.esi.ratelimit import RateLimiter
from killcli.esi.stats import ClientStats

OBSERVE_EVERY_S = 1.0


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.jobs = Counter(
            "killsync_jobs_total", "Jobs handled, by outcome.", ["outcome"], registry=r
        )
        self.killmails_saved = Counter(
            "killsync_killmails_saved_total", "New killmails saved.", registry=r
        )
        self.pending = Counter(
            "killsync_killmails_pending_total", "Killmail bodies recorded as pending.", registry=r
        )
        self.sync_seconds = Histogram(
            "killsync_sync_duration_seconds",
            "Duration of one character sync.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
            registry=r,
        )
        self.esi_requests = Gauge(
            "killsync_esi_responses",
            "ESI responses seen by this process, by group and status.",
            ["group", "status"],
            registry=r,
        )
        self.bucket_remaining = Gauge(
            "killsync_esi_bucket_remaining",
            "Tokens left in an ESI rate-limit bucket, as last reported.",
            ["bucket"],
            registry=r,
        )
        self.error_limit_remain = Gauge(
            "killsync_esi_error_limit_remain",
            "X-ESI-Error-Limit-Remain as last reported.",
            registry=r,
        )
        self._lock = threading.Lock()
        self._observed_at = -OBSERVE_EVERY_S

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``addr:port``; a port in use is a usage error (exit 2)."""
        try:
            start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise UsageError(
                f"--metrics-port {port}: cannot listen on {addr}:{port}: {exc.strerror or exc}"
            ) from exc

    def observe_client(self, stats: ClientStats, limiter: RateLimiter | None) -> None:
        """Copy the ESI client's counters and the limiter's shared buckets (a label per
        character would be thousands of series); at most once per :data:`OBSERVE_EVERY_S`,
        since a worker finishing hundreds of jobs a second calls this after each."""
        now = time.monotonic()
        with self._lock:
            if now - self._observed_at < OBSERVE_EVERY_S:
                return
            self._observed_at = now
        snapshot = stats.snapshot()
        for (group, status), count in snapshot.requests.items():
            self.esi_requests.labels(group or "none", str(status)).set(count)
        if limiter is None:
            return
        state = limiter.snapshot(per_character=False)
        for bucket in state.buckets:
            if bucket.available_tokens is not None:
                self.bucket_remaining.labels(bucket.key.label()).set(bucket.available_tokens)
        if state.error_limit_remain is not None:
            self.error_limit_remain.set(state.error_limit_remain)
