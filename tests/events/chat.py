"""A small real HTTP server that answers like Discord and Slack incoming webhooks.

Discord paths ``/api/webhooks/<id>/<token>`` answer 204 with ``X-RateLimit-*`` headers, or
429 with a JSON ``retry_after`` (seconds) and ``Retry-After`` when a token's bucket is
spent; Slack paths ``/services/T/B/<secret>`` answer 200 ``ok`` or 429 with
``Retry-After``. Deleted tokens answer 404. Tests can script the next replies (``script``)
to force 5xx or 429. Every request is recorded in ``hits``. A test that clears ``gate``
holds every answer until it sets it again (a slow webhook); ``arrived`` counts requests as
they come in, answered or not.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic() when the request arrived
    path: str
    body: Any
    status: int


def rate_limited(retry_after_s: float, *, slack: bool = False) -> Reply:
    headers = {"Retry-After": str(math.ceil(retry_after_s))}
    if slack:
        return Reply(429, headers, b"rate_limited")
    headers |= {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{retry_after_s:.3f}",
        "Content-Type": "application/json",
    }
    body = {"message": "You are being rate limited.", "retry_after": retry_after_s, "global": False}
    return Reply(429, headers, json.dumps(body).encode())


class ChatServer:
    """Start with :meth:`start`, stop with :meth:`stop` (the fixture does both)."""

    def __init__(self, *, bucket_limit: int = 1000, bucket_window_s: float = 2.0) -> None:
        self.bucket_limit = bucket_limit
        self.bucket_window_s = bucket_window_s
        self.script: deque[Reply] = deque()
        self.gone: set[str] = set()
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def discord_url(self, token: str = "sEcReT-t0ken") -> str:
        return f"{self.base}/api/webhooks/112233445566778899/{token}"

    def slack_url(self, secret: str = "sLaCkSeCrEt42") -> str:
        return f"{self.base}/services/T0001/B0001/{secret}"

    @property
    def posted(self) -> list[Any]:
        with self.lock:
            return [h.body for h in self.hits if 200 <= h.status < 300]

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def reply(self, path: str, body: Any) -> Reply:
        """Decide the answer to one request (called with the lock held)."""
        now = time.monotonic()
        slack = path.startswith("/services/")
        if not (slack or path.startswith("/api/webhooks/")):
            return Reply(404, {}, b"not found")
        if path.rsplit("/", 1)[-1] in self.gone:
            if slack:
                return Reply(404, {}, b"no_service")
            return Reply(
                404,
                {"Content-Type": "application/json"},
                b'{"message": "Unknown Webhook", "code": 10015}',
            )
        if self.script:
            return self.script.popleft()
        recent = [
            h
            for h in self.hits
            if h.path == path and 200 <= h.status < 300 and now - h.at < self.bucket_window_s
        ]
        if len(recent) >= self.bucket_limit:
            return rate_limited(self.bucket_window_s - (now - recent[0].at), slack=slack)
        if slack:
            return Reply(200, {"Content-Type": "text/plain"}, b"ok")
        remaining = self.bucket_limit - len(recent) - 1
        reset = self.bucket_window_s - (now - recent[0].at) if recent else self.bucket_window_s
        return Reply(
            204,
            {
                "X-RateLimit-Limit": str(self.bucket_limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset-After": f"{reset:.3f}",
            },
        )


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            with server.lock:
                server.arrived += 1
            server.gate.wait(60)
            with server.lock:
                reply = server.reply(path, body)
                server.hits.append(Hit(time.monotonic(), path, body, reply.status))
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            return

    return Handler
