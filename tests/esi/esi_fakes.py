"""A small stateful fake of ESI for ``httpx.MockTransport``: real bucket arithmetic.

Its floating-window token buckets (per group, and per character for the authenticated list
route) are the simulator's (:class:`killsim.ratelimit.TokenBuckets`, through
:class:`ServerBuckets`): one bucket model per side, the client's in ``killcli.esi.buckets``
and ESI's in ``killsim``. Beside them an error-limit counter, ETags per URL and a
recent-killmails list per character, all on a :class:`ManualClock`. Tests assert what the
client does against it: what it sent, when, and whether the fake ever had to refuse.
"""

from __future__ import annotations

import functools
import hashlib
import json
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Protocol

import httpx

from killsim.ratelimit import BucketReport, TokenBuckets, key_text
from killsim.scenario import format_limit

LIST_RE = re.compile(r"^/characters/(\d+)/killmails/recent$")
KILLMAIL_RE = re.compile(r"^/killmails/(\d+)/([0-9a-f]+)$")


def hash_of(killmail_id: int) -> str:
    return hashlib.sha1(str(killmail_id).encode()).hexdigest()


@dataclass
class Seen:
    """One request as the fake received it."""

    at_s: float
    method: str
    path: str
    query: dict[str, str]
    headers: httpx.Headers
    body: bytes
    status: int = 0


class TestClock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class _ServerTime:
    """A test clock as the simulator's buckets read it (:class:`killsim.clock.Clock`)."""

    def __init__(self, clock: TestClock) -> None:
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), tz=UTC)


class ServerBuckets:
    """ESI's token buckets as the simulator keeps them, and what tests assert on.

    ``limits`` maps a group to ``(tokens, window_s)`` and is read when a group is first
    used, so a test may change it before the first request. ``peak_used`` is the most
    tokens a bucket ever had in use; ``refused`` counts the 429s the buckets sent.
    """

    def __init__(self, clock: TestClock, limits: Mapping[str, tuple[int, float]]) -> None:
        self.limits = limits
        self.peak_used: dict[tuple[str, Hashable], int] = {}
        self.refused = 0
        self._time = _ServerTime(clock)
        self._groups: dict[str, TokenBuckets] = {}

    def answer(
        self, group: str, key: Hashable, build: Callable[[], httpx.Response]
    ) -> httpx.Response:
        """What ``build`` answers if the bucket admits the request, else the bucket's 429."""
        buckets = self._buckets(group)
        ticket = buckets.admit(group, key)
        if isinstance(ticket, BucketReport):
            self.refused += 1
            return httpx.Response(429, headers=ticket.headers())
        response = build()
        report = buckets.settle(ticket, response.status_code)
        used = buckets.spent()[group][key_text(key)]
        self.peak_used[(group, key)] = max(self.peak_used.get((group, key), 0), used)
        response.headers.update(report.headers())
        return response

    def _buckets(self, group: str) -> TokenBuckets:
        if group not in self._groups:
            limit, window = self.limits[group]
            window_s = int(window)
            assert window_s == window, "the simulator's buckets count whole seconds"
            self._groups[group] = TokenBuckets(
                {group: (limit, window_s)}, {group: format_limit(limit, window_s)}, self._time
            )
        return self._groups[group]


class SimulatedClock:
    """Discrete-event time for thread tests: time jumps only when every worker sleeps.

    With real threads and a clock whose ``sleep`` jumps at once, a thread that happens to
    run late in real time would also run late in simulated time. Here a sleeper blocks
    until all workers sleep; then time moves to the earliest deadline, as if every
    request took no time at all.
    """

    def __init__(self, start_wall_s: float = 1_750_000_000.0) -> None:
        self.start_wall_s = start_wall_s
        self.sleeps: list[float] = []
        self._cond = threading.Condition()
        self._now_s = 0.0
        self._deadlines: dict[int, float] = {}
        self._workers = 0

    def monotonic(self) -> float:
        with self._cond:
            return self._now_s

    def wall(self) -> float:
        return self.start_wall_s + self.monotonic()

    def sleep(self, seconds: float) -> None:
        with self._cond:
            self.sleeps.append(seconds)
            me = threading.get_ident()
            self._deadlines[me] = self._now_s + max(0.0, seconds)
            self._advance()
            give_up = time.monotonic() + 20
            while self._now_s < self._deadlines[me]:
                if not self._cond.wait(timeout=1) and time.monotonic() > give_up:
                    raise RuntimeError("simulated time is stuck")
            del self._deadlines[me]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), tz=UTC)

    def run(self, work: Callable[[int], Any], items: Sequence[int], threads: int) -> list[Any]:
        """``work`` over ``items`` on ``threads`` workers; results in item order."""
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(items)):
            todo.put(index)
        results: list[Any] = [None] * len(items)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                while True:
                    try:
                        index = todo.get_nowait()
                    except queue.Empty:
                        return
                    results[index] = work(items[index])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                errors.append(exc)
            finally:
                with self._cond:
                    self._workers -= 1
                    self._advance()

        with self._cond:
            self._workers = threads
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        if errors:
            raise errors[0]
        return results

    def _advance(self) -> None:
        if self._deadlines and len(self._deadlines) >= self._workers:
            self._now_s = max(self._now_s, min(self._deadlines.values()))
            self._cond.notify_all()


class FakeEsi:
    """Callable handler for ``httpx.MockTransport``; thread-safe."""

    def __init__(
        self,
        clock: TestClock,
        *,
        limits: dict[str, tuple[int, float]] | None = None,
        error_limit: int = 100,
        error_window_s: float = 60.0,
    ) -> None:
        self.clock = clock
        self.limits = limits or {"char-killmail": (30, 900.0), "killmail": (3600, 900.0)}
        self.error_limit = error_limit
        self.error_window_s = error_window_s
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.buckets = ServerBuckets(clock, self.limits)
        self.errors: list[float] = []
        self.scripted: deque[Callable[[httpx.Request], httpx.Response | None]] = deque()
        self.lists: dict[int, list[int]] = {}
        self.list_modified: dict[int, datetime] = {}
        self.page_size = 3
        self.list_cache_s = 300.0
        self.known_names: dict[int, tuple[str, str]] = {}
        self.on_list_page: Callable[[int, int], None] | None = None

    @property
    def over_limit(self) -> int:
        """429s the buckets sent (scripted answers not counted)."""
        return self.buckets.refused

    # -- set-up helpers --------------------------------------------------------------

    def set_list(self, character_id: int, killmail_ids: list[int]) -> None:
        """Replace a character's list (call with ``self.lock`` held from inside hooks)."""
        self.lists[character_id] = list(killmail_ids)
        self.list_modified[character_id] = self.clock_now()

    def script(
        self,
        *statuses: int,
        headers: dict[str, str] | None = None,
        body: bytes = b'{"error": "scripted"}',
    ) -> None:
        """The next requests get these statuses, before any normal handling."""
        for status in statuses:
            self.scripted.append(functools.partial(self._canned, status, headers or {}, body))

    @staticmethod
    def _canned(
        status: int, headers: dict[str, str], body: bytes, _request: httpx.Request
    ) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    def script_raise(self, exc: Exception) -> None:
        def raise_it(_request: httpx.Request) -> httpx.Response:
            raise exc

        self.scripted.append(raise_it)

    def clock_now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.wall(), tz=UTC)

    # -- the handler -----------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        seen = Seen(
            self.clock.monotonic(),
            request.method,
            request.url.path,
            dict(request.url.params),
            request.headers,
            request.content,
        )
        with self.lock:
            self.seen.append(seen)
            scripted = self.scripted.popleft() if self.scripted else None
        if scripted is not None:
            response = scripted(request)
            if response is not None:
                seen.status = response.status_code
                return response
        with self.lock:
            response = self._handle(request)
        seen.status = response.status_code
        return response

    def _handle(self, request: httpx.Request) -> httpx.Response:
        now_s = self.clock.monotonic()
        path = request.url.path
        if self._error_limited(now_s):
            return httpx.Response(
                420, headers=self._error_headers(now_s), json={"error": "error limited"}
            )
        if (match := LIST_RE.match(path)) is not None:
            character = int(match.group(1))
            return self._grouped(
                "char-killmail", character, lambda: self._list_page(request, character)
            )
        if (match := KILLMAIL_RE.match(path)) is not None:
            kill_id, kill_hash = int(match.group(1)), match.group(2)
            return self._grouped("killmail", None, lambda: self._killmail(kill_id, kill_hash))
        if path == "/universe/names":
            return self._ungrouped(now_s, self._names(json.loads(request.content)))
        if path == "/status":
            return self._ungrouped(
                now_s,
                httpx.Response(
                    200,
                    json={
                        "players": 20000,
                        "server_version": "1",
                        "start_time": "2025-06-01T11:05:00Z",
                    },
                ),
            )
        return self._ungrouped(now_s, httpx.Response(404, json={"error": "no route"}))

    # -- buckets and error limit -------------------------------------------------------

    def _grouped(
        self, group: str, owner: int | None, build: Callable[[], httpx.Response]
    ) -> httpx.Response:
        return self.buckets.answer(group, owner, build)

    def _ungrouped(self, now_s: float, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            self.errors.append(now_s)
        response.headers.update(self._error_headers(now_s))
        return response

    def _error_limited(self, now_s: float) -> bool:
        return self._errors_in_window(now_s) >= self.error_limit

    def _errors_in_window(self, now_s: float) -> int:
        start = now_s - now_s % self.error_window_s
        return sum(1 for at_s in self.errors if at_s >= start)

    def _error_headers(self, now_s: float) -> dict[str, str]:
        reset_s = self.error_window_s - now_s % self.error_window_s
        remain = max(0, self.error_limit - self._errors_in_window(now_s))
        return {
            "X-ESI-Error-Limit-Remain": str(remain),
            "X-ESI-Error-Limit-Reset": str(int(reset_s)),
        }

    # -- routes ------------------------------------------------------------------------

    def _list_page(self, request: httpx.Request, character_id: int) -> httpx.Response:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return httpx.Response(401, json={"error": "authentication required"})
        page = int(request.url.params.get("page", "1"))
        if self.on_list_page is not None:
            self.on_list_page(character_id, page)
        rows = self.lists.get(character_id, [])
        pages = max(1, -(-len(rows) // self.page_size))
        chunk = rows[(page - 1) * self.page_size : page * self.page_size]
        body = [{"killmail_id": k, "killmail_hash": hash_of(k), "extra": "ignored"} for k in chunk]
        modified = self.list_modified.get(character_id, self.clock_now())
        etag = '"' + hashlib.sha256(json.dumps([body, pages]).encode()).hexdigest()[:16] + '"'
        headers = {
            "ETag": etag,
            "X-Pages": str(pages),
            "Last-Modified": format_datetime(modified, usegmt=True),
            "Expires": format_datetime(
                self.clock_now() + timedelta(seconds=self.list_cache_s), usegmt=True
            ),
        }
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers=headers)
        return httpx.Response(200, headers=headers, json=body)

    def _killmail(self, killmail_id: int, killmail_hash: str) -> httpx.Response:
        if killmail_hash != hash_of(killmail_id):
            return httpx.Response(422, json={"error": "Invalid killmail_id and/or killmail_hash"})
        return httpx.Response(
            200,
            json={
                "killmail_id": killmail_id,
                "killmail_time": "2025-06-01T12:00:00Z",
                "solar_system_id": 30000142,
                "victim": {"ship_type_id": 587, "damage_taken": 1, "items": []},
                "attackers": [],
                "unknown_future_field": {"kept": True},
            },
        )

    def _names(self, ids: list[int]) -> httpx.Response:
        if any(i not in self.known_names for i in ids):
            return httpx.Response(404, json={"error": "Ensure all IDs are valid before resolving"})
        return httpx.Response(
            200,
            json=[
                {"id": i, "name": self.known_names[i][0], "category": self.known_names[i][1]}
                for i in ids
            ],
        )
