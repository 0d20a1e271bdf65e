"""The one-shot browser login: a tiny HTTP server on the callback URL, PKCE and ``state``.

:func:`run_login` opens (or prints) the SSO authorize URL, then serves the callback path on
this machine until the browser comes back once. It checks ``state`` (a mismatch is a
forged or stale callback: the page and the raised ``SsoError`` say so), trades the code for
tokens and shows a small page. Other paths (a browser's ``/favicon.ico``) get a 404 and the
server keeps waiting. Nothing is logged: the callback's query holds the login code.
"""

from __future__ import annotations

import html
import http.server
import time
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from killcli.config import new_token
from killcli.errors import ConfigError, KillsyncError, SsoError
from killcli.sso.client import SsoClient
from killcli.sso.models import TokenSet
from killcli.sso.pkce import make_pkce

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>killsync login</title></head>
<body style="font-family: sans-serif; margin: 3em"><h1>{title}</h1><p>{text}</p></body></html>
"""


@dataclass(frozen=True)
class _Expected:
    path: str
    state: str
    verifier: str
    redirect_uri: str


class _CallbackServer(http.server.HTTPServer):
    """Serves one login callback; the handler leaves the outcome on the server."""

    def __init__(self, address: tuple[str, int], sso: SsoClient) -> None:
        super().__init__(address, _CallbackHandler)
        self.sso = sso
        self.expected: _Expected | None = None
        self.outcome: TokenSet | KillsyncError | None = None


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    server: _CallbackServer
    timeout = 10.0  # a connection that never sends its request must not outlive the login

    def do_GET(self) -> None:
        expected = self.server.expected
        parts = urlsplit(self.path)
        if expected is None or parts.path != expected.path:
            self._page(404, "Not found", "This is killsync's login callback.")
            return
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        outcome = self._outcome(query, expected)
        self.server.outcome = outcome
        if isinstance(outcome, TokenSet):
            self._page(200, "Logged in", f"killsync now syncs {outcome.claims.name}. "
                       "You can close this tab.")
        else:
            self._page(400, "Login failed", str(outcome))

    def _outcome(self, query: dict[str, str], expected: _Expected) -> TokenSet | KillsyncError:
        if query.get("state") != expected.state:
            return SsoError("login callback has the wrong state: it does not come from the "
                            "login killsync started", hint="run `killsync login` again")
        if "error" in query:
            return SsoError(f"EVE SSO login failed: {query['error']} "
                            f"{query.get('error_description', '')}".strip())
        if not query.get("code"):
            return SsoError("login callback carries no code")
        try:
            return self.server.sso.exchange_code(query["code"], expected.verifier,
                                                 expected.redirect_uri)
        except KillsyncError as exc:
            return exc

    def _page(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Silence the default access log: the request line holds the login code."""


def run_login(
    sso: SsoClient,
    callback_url: str,
    scopes: Sequence[str],
    *,
    open_browser: bool,
    timeout_s: float,
    on_url: Callable[[str], None],
    monotonic: Callable[[], float] = time.monotonic,
) -> TokenSet:
    """Log a character in through the browser and return its tokens.

    ``callback_url`` is the redirect URL registered for the application
    (``http://127.0.0.1:8765/callback``); port 0 picks a free port (tests). ``on_url``
    receives the authorize URL, to print for a browser on another machine.
    """
    parts = urlsplit(callback_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"callback URL must be http://host:port/path, got {callback_url!r}")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    try:
        server = _CallbackServer((host, parts.port or 80), sso)
    except OSError as exc:
        raise SsoError(f"cannot listen on {host}:{parts.port}: {exc.strerror}") from exc
    with server:
        netloc = f"{parts.hostname}:{server.server_address[1]}"
        redirect_uri = urlunsplit(("http", netloc, parts.path or "/", "", ""))
        verifier, challenge = make_pkce()
        server.expected = _Expected(parts.path or "/", new_token(), verifier, redirect_uri)
        url = sso.authorize_url(redirect_uri, scopes, server.expected.state, challenge)
        on_url(url)
        if open_browser:
            webbrowser.open(url)
        return _serve_until_done(server, timeout_s, monotonic)


def _serve_until_done(server: _CallbackServer, timeout_s: float,
                      monotonic: Callable[[], float]) -> TokenSet:
    deadline_s = monotonic() + timeout_s
    while server.outcome is None:
        remaining_s = deadline_s - monotonic()
        if remaining_s <= 0:
            raise SsoError(f"login timed out after {timeout_s:g} s without a callback",
                           hint="run `killsync login` again and finish it in the browser")
        server.timeout = remaining_s
        server.handle_request()
    if isinstance(server.outcome, TokenSet):
        return server.outcome
    raise server.outcome
