"""KILLSYNC_SOURCE_ADDRESS: ESI and SSO connections leave from the configured local address."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from killcli.config import load_settings
from killcli.errors import ConfigError, SsoError
from killcli.esi import EsiClient
from killcli.esi.transport import ShardedTransport
from killcli.sso.client import SsoClient


class _Peers(BaseHTTPRequestHandler):
    """Answers ``{}`` and notes the peer address and port of every request (keep-alive,
    as ESI)."""

    protocol_version = "HTTP/1.1"
    peers: list[str]

    def do_GET(self) -> None:
        self.server.peers.append(self.client_address[0])  # type: ignore[attr-defined]
        self.server.ports.append(self.client_address[1])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        return None


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Peers)
    httpd.peers = []  # type: ignore[attr-defined]
    httpd.ports = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def base_url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_esi_requests_leave_from_the_source_address(server: ThreadingHTTPServer) -> None:
    with EsiClient(base_url(server), user_agent="t", local_address="127.0.0.2") as client:
        client.request("GET", "/status")
    assert server.peers == ["127.0.0.2"]  # type: ignore[attr-defined]


def test_sso_requests_leave_from_the_source_address(server: ThreadingHTTPServer) -> None:
    sso = SsoClient(base_url(server), "client", local_address="127.0.0.3")
    try:
        with pytest.raises(SsoError):  # `{}` is no metadata document
            sso.metadata()
    finally:
        sso.close()
    assert server.peers[:1] == ["127.0.0.3"]  # type: ignore[attr-defined]


def test_without_a_source_address_the_system_chooses(server: ThreadingHTTPServer) -> None:
    with EsiClient(base_url(server), user_agent="t") as client:
        client.request("GET", "/status")
    assert server.peers == ["127.0.0.1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["localhost", "10.0.0.300", "eth0", "1.2.3.4/24"])
def test_a_source_address_must_be_an_ip_literal(value: str) -> None:
    with pytest.raises(ConfigError, match="KILLSYNC_SOURCE_ADDRESS"):
        load_settings(environ={"KILLSYNC_SOURCE_ADDRESS": value})


def test_egress_names_are_checked_and_addresses_normalised() -> None:
    settings = load_settings(
        environ={"KILLSYNC_SOURCE_ADDRESS": "2001:DB8::0:1", "KILLSYNC_EGRESS": "nat-eu-1"}
    )
    assert (settings.source_address, settings.egress) == ("2001:db8::1", "nat-eu-1")
    with pytest.raises(ConfigError, match="KILLSYNC_EGRESS"):
        load_settings(environ={"KILLSYNC_EGRESS": "two words"})


def test_sharded_pools_keep_the_connection_limit_and_the_source_address(
    server: ThreadingHTTPServer,
) -> None:
    """8 threads on 4 pools of 2 connections (8 in all, as the client's limit says): every
    request answered, at most 8 connections opened (kept alive), all from the address."""
    transport = ShardedTransport(
        shards=4, limits=httpx.Limits(max_connections=8), local_address="127.0.0.2"
    )
    statuses: list[int] = []
    lock = threading.Lock()
    with httpx.Client(transport=transport, base_url=base_url(server)) as client:

        def fetch() -> None:
            for _ in range(5):
                status = client.get("/status").status_code
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert statuses == [200] * 40
    assert server.peers == ["127.0.0.2"] * 40  # type: ignore[attr-defined]
    assert len(set(server.ports)) <= 8  # type: ignore[attr-defined]
