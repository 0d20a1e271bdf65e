"""PKCE and the one-shot login callback server, end to end over real local HTTP."""

from __future__ import annotations

import base64
import hashlib
import socket
import string
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from killcli.errors import ConfigError, SsoError, UsageError
from killcli.sso import SsoClient, challenge_of, make_pkce, run_login
from tests.sso.sso_fakes import CLIENT_ID, SCOPE, FakeSso

CALLBACK = "http://127.0.0.1:0/callback"


def test_pkce_s256_matches_the_rfc_7636_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert challenge_of(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_make_pkce_gives_a_fresh_valid_pair() -> None:
    verifier, challenge = make_pkce()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(string.ascii_letters + string.digits + "-._~")
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert challenge == digest.rstrip(b"=").decode()
    assert make_pkce()[0] != verifier


def test_authorize_url_comes_from_metadata_with_all_parameters(sso: SsoClient) -> None:
    url = sso.authorize_url(
        "http://127.0.0.1:8765/callback", [SCOPE, "publicData"], "st4te", "ch4llenge"
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://sso.test/v9/authorize"
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "response_type": "code",
        "redirect_uri": "http://127.0.0.1:8765/callback",
        "client_id": CLIENT_ID,
        "scope": f"{SCOPE} publicData",
        "state": "st4te",
        "code_challenge": "ch4llenge",
        "code_challenge_method": "S256",
    }


class Browser:
    """Plays the user's browser: follows the SSO redirect back to the callback server."""

    def __init__(
        self,
        sso_fake: FakeSso,
        *,
        state: str | None = None,
        extra: dict[str, str] | None = None,
        first_path: str | None = None,
    ) -> None:
        self.sso_fake = sso_fake
        self.state = state
        self.extra = extra or {}
        self.first_path = first_path
        self.pages: list[httpx.Response] = []
        self.thread: threading.Thread | None = None

    def __call__(self, url: str) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        redirect_uri = query["redirect_uri"]
        self.sso_fake.grant_code("code-1", query["code_challenge"], redirect_uri)
        params = {"code": "code-1", "state": self.state or query["state"], **self.extra}
        self.thread = threading.Thread(target=self._visit, args=(redirect_uri, params))
        self.thread.start()

    def _visit(self, redirect_uri: str, params: dict[str, str]) -> None:
        with httpx.Client(trust_env=False, timeout=5) as http:
            if self.first_path:
                origin = redirect_uri.rsplit("/", 1)[0]
                self.pages.append(http.get(origin + self.first_path))
            self.pages.append(http.get(redirect_uri, params=params))

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=5)


def login(make_sso: Callable[..., SsoClient], browser: Browser, timeout_s: float = 5) -> object:
    sso = make_sso(secret=None)
    try:
        return run_login(
            sso, CALLBACK, [SCOPE], open_browser=False, timeout_s=timeout_s, on_url=browser
        )
    finally:
        if browser.thread is not None:
            browser.join()


def test_login_end_to_end(make_sso: Callable[..., SsoClient], sso_fake: FakeSso) -> None:
    browser = Browser(sso_fake, first_path="/favicon.ico")
    tokens = login(make_sso, browser)
    assert tokens.claims.character_id == 90000001  # type: ignore[attr-defined]
    favicon, callback = browser.pages
    assert favicon.status_code == 404
    assert callback.status_code == 200
    assert "Logged in" in callback.text and "Pilot One" in callback.text


def test_a_wrong_state_is_ignored_and_never_exchanged(
    make_sso: Callable[..., SsoClient], sso_fake: FakeSso
) -> None:
    browser = Browser(sso_fake, state="forged")
    with pytest.raises(SsoError, match="timed out"):
        login(make_sso, browser, timeout_s=1)
    (page,) = browser.pages
    assert page.status_code == 400
    assert "ignored" in page.text
    assert sso_fake.token_requests == []  # the code was never exchanged


def test_sso_error_in_callback_ends_the_login_and_echoes_nothing(
    make_sso: Callable[..., SsoClient], sso_fake: FakeSso
) -> None:
    browser = Browser(
        sso_fake, extra={"error": "access_denied", "error_description": "<script>x</script>"}
    )
    with pytest.raises(SsoError, match="login refused in the browser"):
        login(make_sso, browser)
    assert browser.pages[0].status_code == 400
    assert "script" not in browser.pages[0].text
    assert sso_fake.token_requests == []


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf")])
def test_the_timeout_must_be_finite_and_positive(
    make_sso: Callable[..., SsoClient], timeout_s: float
) -> None:
    with pytest.raises(UsageError, match="positive number of seconds"):
        run_login(
            make_sso(secret=None),
            CALLBACK,
            [SCOPE],
            open_browser=False,
            timeout_s=timeout_s,
            on_url=lambda _url: None,
        )


def test_login_times_out_cleanly(make_sso: Callable[..., SsoClient]) -> None:
    urls: list[str] = []
    with pytest.raises(SsoError, match=r"timed out after 0.2 s"):
        run_login(
            make_sso(secret=None),
            CALLBACK,
            [SCOPE],
            open_browser=False,
            timeout_s=0.2,
            on_url=urls.append,
        )
    assert len(urls) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8765/callback",
        "http:///callback",
        "http://127.0.0.1:99999/callback",
        "http://127.0.0.1:x/cb",
    ],
)
def test_callback_url_must_be_plain_http(make_sso: Callable[..., SsoClient], url: str) -> None:
    with pytest.raises(ConfigError, match="callback URL must be"):
        run_login(
            make_sso(), url, [SCOPE], open_browser=False, timeout_s=1, on_url=lambda _url: None
        )


def test_a_busy_callback_port_is_a_config_error(make_sso: Callable[..., SsoClient]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        url = f"http://127.0.0.1:{busy.getsockname()[1]}/callback"
        with pytest.raises(ConfigError, match=r"cannot listen on .*: Address already in use"):
            run_login(
                make_sso(), url, [SCOPE], open_browser=False, timeout_s=1, on_url=lambda _url: None
            )
