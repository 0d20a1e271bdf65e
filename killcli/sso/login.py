"""The one-shot browser login: a small HTTP server on the callback URL, PKCE and ``state``.

:func:`run_login` opens (or prints) the SSO authorize URL, then serves the callback path on
this machine until the browser comes back with this login's ``state``. Any web page can
fire requests at ``127.0.0.1:8765``, so everything else is answered and ignored:

=========================================  ======  ==============================
request                                    status  effect on the login
=========================================  ======  ==============================
callback, right ``state`` and a ``code``   200     code traded for tokens: done
callback, right ``state`` and ``error=``   400     ends (the user refused)
callback, wrong or missing ``state``       400     ignored, the login keeps waiting
callback after the real one                400     ignored
another path (``/favicon.ico``)            404     ignored
a method other than GET                    405     ignored
slow, oversized or cut-short request       none    connection dropped
=========================================  ======  ==============================

The login has one deadline (``timeout_s``) that no client can extend. Each connection is
served on its own thread (at most ``_MAX_CONNECTIONS`` at once, more are dropped), must send
its request head within ``_REQUEST_TIMEOUT_S`` and before the deadline, and the caller waits
on an event bounded by the deadline, never on a connection. Once the real callback has
arrived, the code exchange runs under the SSO client's own timeouts. Pages are fixed texts:
nothing from the request is echoed into them. Nothing is logged: the query holds the code.
"""

from __future__ import annotations

import hmac
import html
import http.server
import io
import math
import re
import socket
import socketserver
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qs, urlsplit, urlunsplit

from killcli.config import new_token
from killcli.errors import ConfigError, KillsyncError, LoginRefused, SsoError, UsageError
from killcli.sso.client import SsoClient
from killcli.sso.models import TokenSet
from killcli.sso.pkce import make_pkce

if TYPE_CHECKING:
    from socketserver import _RequestType

_MAX_CONNECTIONS = 32  # a browser opens ~6 per host; beyond this a connection is dropped
_REQUEST_TIMEOUT_S = 5.0  # a connection's whole budget for its request head (one packet)
_WRITE_TIMEOUT_S = 5.0  # for sending the (small) page back
_MAX_HEAD_BYTES = 64 * 1024  # the request line and headers (cookies of other local apps)
_HEAD_END = re.compile(rb"\n\r?\n")
_POLL_S = 0.1  # how soon the accept loop notices it is shut down
_OAUTH_TEXT = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,200}")  # RFC 6749 error charset

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>killsync login</title></head>
<body style="font-family: sans-serif; margin: 3em"><h1>{title}</h1><p>{text}</p></body></html>
"""
_NOT_HERE = "This is killsync's login callback."
_IGNORED = "This request does not belong to the login in progress; it was ignored."
_NOT_DONE = "The login did not complete: killsync's terminal says why."


@dataclass(frozen=True)
class _Expected:
    path: str
    state: str
    verifier: str
    redirect_uri: str


class _CallbackServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Serves login callbacks, one thread per connection; the first real one is the outcome."""

    daemon_threads = True
    request_queue_size = _MAX_CONNECTIONS  # the listen backlog: a burst is accepted, not refused
    block_on_close = False  # a slow client's thread ends by its own deadline, unwaited

    def __init__(self, address: tuple[str, int], sso: SsoClient) -> None:
        super().__init__(address, _CallbackHandler)
        self.sso = sso
        self.expected: _Expected | None = None
        self.timeout_s = math.inf
        self.deadline_s = math.inf
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self._claim_lock = threading.Lock()
        self._claimed = threading.Event()
        self._done = threading.Event()
        self._outcome: TokenSet | BaseException = SsoError("login ended without an outcome")

    def start(self, expected: _Expected, timeout_s: float) -> None:
        """Accept callbacks for ``expected`` until ``timeout_s`` from now."""
        self.expected = expected
        self.timeout_s = timeout_s
        self.deadline_s = time.monotonic() + timeout_s

    def connection_deadline_s(self) -> float:
        """When a connection accepted now must have sent its request head."""
        return min(time.monotonic() + _REQUEST_TIMEOUT_S, self.deadline_s)

    def is_ours(self, state: str | None) -> bool:
        """Whether ``state`` is this login's (compared in constant time)."""
        if self.expected is None or state is None:
            return False
        return hmac.compare_digest(state.encode(), self.expected.state.encode())

    def claim(self) -> bool:
        """Take the login's one outcome slot; False when a callback (or the deadline) has."""
        with self._claim_lock:
            if self._claimed.is_set():
                return False
            self._claimed.set()
            return True

    def finish(self, outcome: TokenSet | BaseException) -> None:
        """Hand the claimed callback's outcome to :meth:`wait_for_outcome`."""
        self._outcome = outcome
        self._done.set()

    def wait_for_outcome(self) -> TokenSet:
        """The tokens of the real callback, or its error; SsoError at the deadline."""
        remaining_s = max(0.0, self.deadline_s - time.monotonic())
        if not self._claimed.wait(remaining_s) and self.claim():  # claimed: no late callback
            raise SsoError(
                f"login timed out after {self.timeout_s:g} s without a callback",
                hint="run `killsync login` again and finish it in the browser",
            )
        self._done.wait()  # set by the claiming handler whatever happens (see _answer)
        if isinstance(self._outcome, TokenSet):
            return self._outcome
        raise self._outcome

    def process_request(self, request: _RequestType, client_address: object) -> None:
        """Serve the connection on a thread, or drop it when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # the thread did not start
            raise

    def process_request_thread(self, request: _RequestType, client_address: object) -> None:
        """The thread body: serve, then free the slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: _RequestType, client_address: object) -> None:
        """Drop a failed connection silently: the default traceback would show the code."""


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    server: _CallbackServer
    timeout = _WRITE_TIMEOUT_S  # set by setup(); reading the head is bounded by a deadline
    server_version = "killsync"
    sys_version = ""

    def handle(self) -> None:
        """Read one request head within this connection's budget, then answer it."""
        head = _read_head(self.connection, self.server.connection_deadline_s())
        if head is None:
            return  # too slow, too large or cut short: dropped without an answer
        self.rfile.close()
        self.rfile = io.BytesIO(head)
        self.connection.settimeout(_WRITE_TIMEOUT_S)
        self.handle_one_request()

    def parse_request(self) -> bool:
        """The stdlib's parsing, then GET only (405 otherwise)."""
        if not super().parse_request():
            return False
        if self.command != "GET":
            self._page(405, "Method not allowed", _NOT_HERE, {"Allow": "GET"})
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """A malformed request: a fixed page (the stdlib's would echo the request line)."""
        self._page(code, "Bad request", _NOT_HERE)

    def do_GET(self) -> None:
        path, _, raw_query = self.path.partition("?")  # not urlsplit: "//host/..." is a path
        expected = self.server.expected
        if expected is None or path != expected.path:
            self._page(404, "Not found", _NOT_HERE)
            return
        query = parse_qs(raw_query, keep_blank_values=True)
        if not self.server.is_ours(_single(query, "state")) or not self.server.claim():
            self._page(400, "Ignored", _IGNORED)
            return
        self._answer(query, expected)

    def _answer(self, query: dict[str, list[str]], expected: _Expected) -> None:
        outcome: TokenSet | BaseException
        try:
            outcome = _outcome(self.server.sso, query, expected)
        except Exception as exc:  # noqa: BLE001 - a bug: the waiting caller re-raises it
            outcome = exc
        try:
            if isinstance(outcome, TokenSet):
                self._page(
                    200,
                    "Logged in",
                    f"killsync now syncs {outcome.claims.name}. You can close this tab.",
                )
            else:
                self._page(400, "Login not completed", _NOT_DONE)
        finally:
            self.server.finish(outcome)

    def _page(
        self, status: int, title: str, text: str, headers: dict[str, str] | None = None
    ) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode("utf-8")
        self.send_response(status)
        for name, value in {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "Connection": "close",
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Silence the default access log: the request line holds the login code."""


def _read_head(sock: socket.socket, deadline_s: float) -> bytes | None:
    """The request line and headers, read by ``deadline_s``; None if slower, larger or cut."""
    head = bytearray()
    searched = 0
    while not _HEAD_END.search(head, searched):
        remaining_s = deadline_s - time.monotonic()
        if remaining_s <= 0 or len(head) > _MAX_HEAD_BYTES:
            return None
        searched = max(0, len(head) - 2)  # a head end may straddle two reads
        sock.settimeout(remaining_s)
        try:
            chunk = sock.recv(4096)
        except OSError:  # TimeoutError included
            return None
        if not chunk:
            return None
        head += chunk
    return bytes(head)


def _single(query: dict[str, list[str]], key: str) -> str | None:
    """A parameter given exactly once (a repeated ``state`` or ``code`` counts as missing)."""
    values = query.get(key, [])
    return values[0] if len(values) == 1 else None


def _outcome(
    sso: SsoClient, query: dict[str, list[str]], expected: _Expected
) -> TokenSet | KillsyncError:
    """What the real callback (right ``state``) means: tokens, a refusal or an error."""
    error = _single(query, "error")
    if error is not None:
        return _refusal(error, _single(query, "error_description"))
    code = _single(query, "code")
    if not code:
        return SsoError("login callback carries no code")
    try:
        return sso.exchange_code(code, expected.verifier, expected.redirect_uri)
    except KillsyncError as exc:
        return exc


def _refusal(error: str, description: str | None) -> SsoError:
    """The SSO's ``error=`` redirect as one line (only RFC 6749 characters are shown)."""
    if error == "access_denied":
        return LoginRefused(
            "login refused in the browser: EVE SSO answered access_denied",
            hint="run `killsync login` again and authorize the application",
        )
    shown = error if _OAUTH_TEXT.fullmatch(error) else "an unreadable error"
    if description is not None and _OAUTH_TEXT.fullmatch(description):
        shown = f"{shown}: {description}"
    return SsoError(f"EVE SSO refused the login: {shown}", hint="run `killsync login` again")


def run_login(
    sso: SsoClient,
    callback_url: str,
    scopes: Sequence[str],
    *,
    open_browser: bool,
    timeout_s: float,
    on_url: Callable[[str], None],
) -> TokenSet:
    """Log a character in through the browser and return its tokens.

    ``callback_url`` is the redirect URL registered for the application
    (``http://127.0.0.1:8765/callback``); port 0 picks a free port (tests). ``on_url``
    receives the authorize URL, to print for a browser on another machine. The whole login
    must reach its callback within ``timeout_s`` (else ``SsoError``, exit code 5); a refusal
    in the browser raises ``LoginRefused`` (exit code 4), a failed code exchange
    ``SsoError``. A callback URL that is not ``http://host:port/path``, or where nothing can
    listen, raises ``ConfigError``.
    """
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise UsageError(f"login timeout must be a positive number of seconds, got {timeout_s}")
    parts = urlsplit(callback_url)
    host, port = _listen_address(parts, callback_url)
    try:
        server = _CallbackServer((host, port), sso)
    except OSError as exc:
        raise ConfigError(
            f"callback URL {callback_url!r}: cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="KILLSYNC_CALLBACK_URL sets the address; is another `killsync login` running?",
        ) from exc
    with server:
        netloc = f"{parts.hostname}:{server.server_address[1]}"
        redirect_uri = urlunsplit(("http", netloc, parts.path or "/", "", ""))
        verifier, challenge = make_pkce()
        expected = _Expected(parts.path or "/", new_token(), verifier, redirect_uri)
        url = sso.authorize_url(redirect_uri, scopes, expected.state, challenge)
        server.start(expected, timeout_s)
        with _accepting(server):
            on_url(url)
            if open_browser:
                webbrowser.open(url)
            return server.wait_for_outcome()


def _listen_address(parts: SplitResult, callback_url: str) -> tuple[str, int]:
    """Where to listen for ``callback_url`` (``localhost`` is 127.0.0.1, no port is 80)."""
    try:
        port = parts.port
    except ValueError:  # not a number, or out of 0-65535
        port = -1
    if parts.scheme != "http" or not parts.hostname or port == -1:
        raise ConfigError(f"callback URL must be http://host:port/path, got {callback_url!r}")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return host, 80 if port is None else port


@contextmanager
def _accepting(server: _CallbackServer) -> Iterator[None]:
    """Accept connections on a thread (the caller waits for the outcome) until the block ends."""
    acceptor = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_S},
        name="killsync-login",
        daemon=True,
    )
    acceptor.start()
    try:
        yield
    finally:
        server.shutdown()
        acceptor.join()
