"""The ESI client's sharded connection pools, over real HTTP on loopback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from killcli.esi.transport import ShardedTransport


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ESI

    def do_GET(self) -> None:
        seen: list[tuple[str, int]] = self.server.seen  # type: ignore[attr-defined]
        seen.append(self.client_address)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_threads_share_few_pools_and_the_connection_limit_holds(
    server: http.server.ThreadingHTTPServer,
) -> None:
    """8 threads, 4 pools of 2 connections (limit 8 in all): every request answered, no
    more than 8 connections opened (kept alive), all from the address asked for."""
    transport = ShardedTransport(
        shards=4, limits=httpx.Limits(max_connections=8), local_address="127.0.0.1"
    )
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    statuses: list[int] = []
    lock = threading.Lock()
    with httpx.Client(transport=transport) as client:

        def fetch() -> None:
            for _ in range(5):
                status = client.get(url).status_code
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    seen: list[tuple[str, int]] = server.seen  # type: ignore[attr-defined]
    assert statuses == [200] * 40
    assert len(seen) == 40
    assert {host for host, _ in seen} == {"127.0.0.1"}
    assert len({port for _, port in seen}) <= 8  # kept alive, within the limit
