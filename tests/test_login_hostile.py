"""The login callback under fire: forged callbacks, slow clients, refusals, one deadline.

Everything goes over real HTTP: ``run_login`` (or ``killsync login``) listens on a free
port, the simulated EVE SSO issues the code and trades it, and the tests play both the
user's browser and a hostile web page or local client aimed at the callback port.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from killcli.errors import SsoError
from killcli.sso import SsoClient, run_login
from killcli.sso.models import TokenSet
from tests.test_login import login_env, start_login

SCOPE = "esi-killmails.read_killmails.v1"
SLOW_HEAD = b"GET /callback?state=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 4096


class LoginRun:
    """``run_login`` on a thread, so the test can play the browser and the attacker."""

    def __init__(self, sso: SsoClient, timeout_s: float) -> None:
        self._urls: queue.Queue[str] = queue.Queue()
        self.outcome: TokenSet | BaseException | None = None
        self.elapsed_s = 0.0
        self._thread = threading.Thread(target=self._run, args=(sso, timeout_s))
        self._thread.start()
        self.authorize_url = self._urls.get(timeout=10)

    def _run(self, sso: SsoClient, timeout_s: float) -> None:
        started = time.monotonic()
        try:
            self.outcome = run_login(
                sso,
                "http://127.0.0.1:0/callback",
                [SCOPE],
                open_browser=False,
                timeout_s=timeout_s,
                on_url=self._urls.put,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test by join()
            self.outcome = exc
        self.elapsed_s = time.monotonic() - started

    def callback(self) -> str:
        """The callback URL the SSO redirects the browser to (with the real state)."""
        answer = httpx.get(self.authorize_url, follow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]

    def join(self) -> TokenSet | BaseException | None:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        return self.outcome


class SlowClient:
    """A slowloris: sends a request head one byte every ``interval_s``, never finishing."""

    def __init__(self, url: str, interval_s: float = 0.5, duration_s: float = 12.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "", parts.port or 80), 5)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, args=(interval_s, duration_s))
        self._thread.start()

    def _drip(self, interval_s: float, duration_s: float) -> None:
        ends_at = time.monotonic() + duration_s
        for byte in SLOW_HEAD:
            if time.monotonic() > ends_at or self._stop.wait(interval_s):
                return
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                return  # the server dropped us
            self.sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def sim(start_sim: Any) -> Any:
    return start_sim("smoke", client_kind="pkce")


@pytest.fixture
def sso(sim: Any) -> Iterator[SsoClient]:
    with SsoClient(sim.sso_url, sim.client_id) as client:
        yield client


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters replaced (a None value removes the parameter)."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query)) | changes
    kept = {k: v for k, v in params.items() if v is not None}
    return urlunsplit(parts._replace(query=urlencode(kept)))


def raw_request(url: str, data: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), 5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def test_forged_callbacks_are_ignored_and_the_real_one_logs_in(sim: Any, sso: SsoClient) -> None:
    run = LoginRun(sso, timeout_s=20)
    real = run.callback()
    origin = real.split("/callback", 1)[0]
    with httpx.Client(trust_env=False, timeout=5) as http:
        forged = [
            http.get(with_query(real, state="forged")),
            http.get(with_query(real, state=None)),
            http.get(with_query(real, state="")),
            http.get(real + "&state=twice"),  # the real state plus another one
            http.get(with_query(real, state="<script>alert(1)</script>", code="<b>x</b>")),
            http.get(with_query(real, state="forged", error="access_denied")),
        ]
        assert [page.status_code for page in forged] == [400] * len(forged)
        for page in forged:
            assert "ignored" in page.text
            assert "script" not in page.text and "alert" not in page.text
            assert "<b>" not in page.text
        assert http.get(origin + "/favicon.ico").status_code == 404
        assert http.get(origin + "/callback/../x").status_code == 404
        assert b" 404 " in raw_request(real, b"GET //[x/callback?state=x HTTP/1.0\r\n\r\n")
        assert http.post(real).status_code == 405
        assert http.request("HEAD", real).status_code == 405
        assert b"Bad request" in raw_request(real, b"NONSENSE\r\n\r\n")  # HTTP/0.9: no head
        answer = raw_request(real, b"GET /<script> HTTP/9.9\r\n\r\n")
        assert b"Bad request" in answer and b"<script>" not in answer
        page = http.get(real)
    assert page.status_code == 200 and "Logged in" in page.text
    outcome = run.join()
    assert isinstance(outcome, TokenSet), outcome
    assert outcome.claims.character_id == sim.world.character_ids[0]


def test_a_slow_client_cannot_extend_the_deadline(sso: SsoClient) -> None:
    run = LoginRun(sso, timeout_s=2)
    slow = SlowClient(run.callback(), interval_s=0.5)
    try:
        outcome = run.join()
    finally:
        slow.close()
    assert isinstance(outcome, SsoError)
    assert "timed out after 2 s" in str(outcome)
    assert outcome.exit_code == 5
    assert run.elapsed_s < 5


def test_a_slow_client_does_not_block_the_real_callback(sso: SsoClient) -> None:
    run = LoginRun(sso, timeout_s=20)
    real = run.callback()
    slow = SlowClient(real, interval_s=0.5)
    try:
        time.sleep(1.0)  # the slow client holds its connection open, mid-request
        started = time.monotonic()
        page = httpx.get(real, timeout=10)
        outcome = run.join()
        assert time.monotonic() - started < 5
        assert slow.sent >= 1
    finally:
        slow.close()
    assert page.status_code == 200
    assert isinstance(outcome, TokenSet), outcome


def test_many_idle_connections_neither_crash_nor_extend_the_login(sso: SsoClient) -> None:
    run = LoginRun(sso, timeout_s=2)
    parts = urlsplit(run.callback())
    idle = [
        socket.create_connection((parts.hostname or "", parts.port or 80), 5) for _ in range(40)
    ]  # more than the server's connection slots
    try:
        outcome = run.join()
    finally:
        for sock in idle:
            sock.close()
    assert isinstance(outcome, SsoError) and "timed out" in str(outcome)
    assert run.elapsed_s < 5


def test_a_refusal_in_the_browser_ends_the_login_cleanly(sim: Any, sso: SsoClient) -> None:
    sim.set_login_character(None)  # the user clicks "cancel" at EVE SSO
    run = LoginRun(sso, timeout_s=20)
    callback = run.callback()
    assert "error=access_denied" in callback
    page = httpx.get(callback, timeout=10)
    outcome = run.join()
    assert isinstance(outcome, SsoError)
    assert str(outcome).startswith("login refused in the browser")
    assert "access_denied" in str(outcome)
    assert page.status_code == 400 and "did not complete" in page.text
    assert "cancelled" not in page.text  # the error description is not echoed


def test_a_refusal_with_a_hostile_description_shows_none_of_it(sso: SsoClient) -> None:
    run = LoginRun(sso, timeout_s=20)
    real = run.callback()
    page = httpx.get(
        with_query(
            real, code=None, error="server_error", error_description="\x1b]0;owned\x07<script>"
        ),
        timeout=10,
    )
    outcome = run.join()
    assert isinstance(outcome, SsoError)
    assert str(outcome) == ("EVE SSO refused the login: server_error (run `killsync login` again)")
    assert "script" not in page.text


def test_the_cli_login_ends_at_its_deadline_despite_a_slow_client(
    start_sim: Any, tmp_path: Path
) -> None:
    sim = start_sim("smoke")
    proc, url = start_login(login_env(sim, tmp_path), "--timeout", "2")
    started = time.monotonic()
    callback = httpx.get(url, follow_redirects=False, timeout=10).headers["location"]
    slow = SlowClient(callback, interval_s=0.5)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        slow.close()
    assert time.monotonic() - started < 5
    assert proc.returncode == 5
    assert err.strip().splitlines() == [
        "killsync: error: login timed out after 2 s without a callback "
        "(run `killsync login` again and finish it in the browser)"
    ]


def test_the_cli_reports_a_refusal_in_one_line(start_sim: Any, tmp_path: Path) -> None:
    sim = start_sim("smoke")
    sim.set_login_character(None)  # the user clicks "cancel" at EVE SSO
    proc, url = start_login(login_env(sim, tmp_path))
    page = httpx.get(url, follow_redirects=True, timeout=10)
    _, err = proc.communicate(timeout=30)
    assert page.status_code == 400
    assert proc.returncode == 4  # NEEDS_LOGIN: the character is still not logged in
    assert err.strip().splitlines() == [
        "killsync: error: login refused in the browser: EVE SSO answered access_denied "
        "(run `killsync login` again and authorize the application)"
    ]
