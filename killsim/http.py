"""A small HTTP/1.1 layer on the standard library's threading server.

Keep-alive connections, one thread per connection, and a clean stop: open connections
are shut down and every handler thread is joined, so tests leak neither sockets nor
threads.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from killsim.clock import Clock

MAX_BODY_BYTES = 1 << 20
IDLE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower-case."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client_ip: str

    def header(self, name: str) -> str | None:
        """A request header by (any-case) name."""
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    """What to send back. ``truncate`` sends half the body and drops the connection."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        """A JSON response (compact, UTF-8)."""
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        out = {"Content-Type": "application/json; charset=utf-8"}
        out.update(headers or {})
        return cls(status, data, out)

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """ESI's error body: ``{"error": message}``."""
        return cls.json(status, {"error": message})


App = Callable[[Request], Response]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out in separate writes: without TCP_NODELAY the body would wait
    # for the client's delayed ACK (40 ms) on every keep-alive request.
    disable_nagle_algorithm = True
    server: SimHTTPServer

    def handle(self) -> None:
        # A client that disappears (timeout, truncated answer) is normal here.
        with contextlib.suppress(ConnectionError, OSError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        return None

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._write(Response.error(413, "Request body too large"))
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path or "/",
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client_ip=self.client_address[0],
        )
        self._write(self.server.app(request))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch  # noqa: N815 - stdlib names

    def _write(self, response: Response) -> None:
        self.send_response_only(response.status)
        self.send_header("Date", format_datetime(self.server.clock.now(), usegmt=True))
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.truncate:
            self.wfile.write(response.body[: len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if response.body:
            self.wfile.write(response.body)


class SimHTTPServer(ThreadingHTTPServer):
    """The threading server, tracking connections and handler threads for a clean stop.

    Handler threads are daemons (a stuck client never blocks interpreter exit), so the
    standard library does not join them; :meth:`close_connections` and
    :meth:`join_handlers` do.
    """

    daemon_threads = True
    # ESI sits behind load balancers that accept whatever a client opens at once; the
    # standard library's backlog of 5 dropped the SYNs of a worker opening 96 connections,
    # and each waited a second for the kernel's retransmit.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: App, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        self._connections: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []
        self._track_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="killsync-sim-connection",
            daemon=True,
        )
        with self._track_lock:
            self._connections.add(request)
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._track_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The app answers its own errors; a dropped connection is not worth a traceback.
        return None

    def close_connections(self) -> None:
        """Wake every handler blocked on a keep-alive connection."""
        with self._track_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout_s: float = 5.0) -> None:
        """Wait for every handler thread to finish (they do once connections are closed)."""
        with self._track_lock:
            handlers = list(self._handlers)
        deadline = time.monotonic() + timeout_s
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))
