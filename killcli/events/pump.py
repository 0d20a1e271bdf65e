"""What a worker does with events after each job: relay them and post webhooks.

Events are already in the outbox (written with their killmails). On the pump's own
thread, woken by a job that saved new killmails and on a timer, the worker publishes
unpublished rows to the ``killsync.events`` fanout exchange (fleets only) and runs one
webhook delivery round. Neither may fail or delay a job (its ack never waits for the
network): problems are reported and the rows wait for the next round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from killcli.config import Settings
from killcli.db import Database
from killcli.errors import KillsyncError
from killcli.events.hookpost import make_client
from killcli.events.relay import EventRelay
from killcli.events.webhooks import deliver_pending
from killcli.secrets import make_cipher

PUMP_INTERVAL_S = 5.0


class EventPump:
    """Rounds run on the pump's thread (see :meth:`start`), and once more in :meth:`close`
    after that thread ended, so never two at once.

    :meth:`wake` asks the pump thread for a round now, without waiting for it; several
    wakes during one round make one more round."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        on_problem: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._db = db
        broker = settings.broker_url
        self._relay = EventRelay(broker) if broker and settings.uses_rabbitmq else None
        self._http = make_client()
        self._cipher = make_cipher(settings, db)
        self._on_problem = on_problem
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._timer: threading.Thread | None = None

    def wake(self) -> None:
        """Run a round soon on the pump thread (new killmails were saved); never blocks."""
        self._wake.set()

    def _round(self) -> None:
        try:
            if self._relay is not None:
                self._relay.relay_pending(self._db)
            deliver_pending(self._db, self._cipher, self._http)
        except KillsyncError as exc:
            self._on_problem(f"events: {exc} (will retry)")

    def start(self, interval_s: float = PUMP_INTERVAL_S) -> None:
        """Pump in a daemon thread when woken and every ``interval_s`` seconds, until
        :meth:`close`."""

        def loop() -> None:
            while True:
                self._wake.wait(interval_s)
                if self._stop.is_set():
                    return
                self._wake.clear()
                self._round()

        self._timer = threading.Thread(target=loop, name="killsync-events", daemon=True)
        self._timer.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._timer is not None:
            self._timer.join()
        self._round()  # what the last jobs saved goes out before the worker exits
        if self._relay is not None:
            self._relay.close()
        self._http.close()
