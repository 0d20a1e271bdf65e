"""The simulator as one object: a world, ESI at ``/``, the SSO at ``/sso``, on one port."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from killsim.clock import Clock, SystemClock
from killsim.errors import ListenError
from killsim.esi import EsiApp
from killsim.esi_routes import EsiData
from killsim.faults import Faults
from killsim.http import Request, Response, SimHTTPServer
from killsim.keys import SigningKeys
from killsim.lists import ListCache
from killsim.market import HistoryLimiter
from killsim.ratelimit import ErrorLimiter, TokenBuckets
from killsim.scenario import CORPORATION_SCOPES, READ_KILLMAILS, Scenario
from killsim.sso import PREFIX, SsoApp
from killsim.sso_state import Grant, SsoState
from killsim.stats import Stats
from killsim.world import World

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CharacterLogin:
    """A simulated character with a ready refresh token."""

    character_id: int
    name: str
    refresh_token: str
    scopes: tuple[str, ...] = ()  #: what the token grants (not in ``to_dict``)


@dataclass(frozen=True)
class Provisioned:
    """Everything a client needs to talk to a running simulator."""

    esi_url: str
    sso_url: str
    client_id: str
    client_secret: str | None
    characters: tuple[CharacterLogin, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (what ``--tokens-file`` writes)."""
        return {
            "esi_url": self.esi_url,
            "sso_url": self.sso_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "characters": [
                {"character_id": c.character_id, "name": c.name, "refresh_token": c.refresh_token}
                for c in self.characters
            ],
        }


class SimServer:
    """ESI and EVE SSO for one scenario, served over HTTP on 127.0.0.1.

    Use as a context manager (``with SimServer(scenario) as sim: ...``) or call
    :meth:`start` and :meth:`stop`. Pass ``clock=ManualClock()`` to move time by hand and
    ``keys=`` to reuse signing keys between servers (RSA key generation is slow).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        clock: Clock | None = None,
        keys: SigningKeys | None = None,
    ) -> None:
        self.scenario = scenario
        self.clock: Clock = clock or SystemClock()
        self._address = (host, port)
        self.keys = keys or SigningKeys.generate()
        self.world = World(scenario, self.clock)
        self._lists = ListCache(self.world, self.clock, scenario.list_cache_s, scenario.page_size)
        self._corp_lists = ListCache(
            self.world,
            self.clock,
            scenario.list_cache_s,
            scenario.page_size,
            rows=self.world.corporation_recent,
        )
        limit_headers = {g: scenario.limit_header(g) for g in scenario.buckets}
        self._buckets = TokenBuckets(scenario.buckets, limit_headers, self.clock)
        self.stats = Stats(self._buckets.spent)
        self.faults = Faults(
            scenario.faults,
            scenario.seed,
            self.clock,
            self._lists.refresh,
            self._corp_lists.refresh,
        )
        self._errors = ErrorLimiter(scenario.error_limit, scenario.error_window_s, self.clock)
        #: The market history's per-minute limit (``answered`` and ``refused`` counts).
        self.market_history_limiter = HistoryLimiter(
            scenario.market_history_limit, scenario.market_history_window_s, self.clock
        )
        names = {c.character_id: c.name for c in self.world.characters}
        self._sso_state = SsoState(scenario, names, self.keys, self.clock, issuer="")
        self._stop = threading.Event()
        self._esi = EsiApp(
            data=EsiData(
                self.world,
                self._lists,
                self.clock,
                scenario.body_cache_s,
                corporation_lists=self._corp_lists,
                role_error=scenario.role_error,
            ),
            keys=self.keys,
            buckets=self._buckets,
            errors=self._errors,
            faults=self.faults,
            stats=self.stats,
            clock=self.clock,
            stop=self._stop,
            history_limiter=self.market_history_limiter,
        )
        self._sso: SsoApp | None = None
        self._httpd: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> SimServer:
        """Bind the port and serve in a background thread."""
        if self._httpd is not None:
            raise RuntimeError("the simulator is already running")
        try:
            self._httpd = SimHTTPServer(self._address, self._app, self.clock)
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {self._address[0]}:{self._address[1]}: {exc.strerror or exc}"
            ) from exc
        self._sso_state.issuer = self.sso_url
        started_s = self.clock.monotonic()  # downtime and error windows count from here
        self.faults.anchor(started_s)
        self._errors.anchor(started_s)
        self._sso = SsoApp(self._sso_state, self.keys, self.faults, self.esi_url)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="killsync-sim",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: end stalls, close connections, join every thread."""
        if self._httpd is None:
            return
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._httpd.join_handlers()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until :meth:`stop` is called (from another thread); True once stopped."""
        return self._stop.wait(timeout_s)

    # -- addresses and the application -------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._httpd is None:
            raise RuntimeError("the simulator is not running")
        return int(self._httpd.server_address[1])

    @property
    def esi_url(self) -> str:
        """``http://127.0.0.1:PORT``: ESI's base URL."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def sso_url(self) -> str:
        """``http://127.0.0.1:PORT/sso``: the SSO's base URL (and token issuer)."""
        return self.esi_url + PREFIX

    @property
    def client_id(self) -> str:
        """The scenario's application (client) id."""
        return self._sso_state.client_id

    @property
    def client_secret(self) -> str | None:
        """None for a PKCE application."""
        return self._sso_state.client_secret

    # -- provisioning and runtime changes -------------------------------------------------

    def issue_refresh_token(
        self, character_id: int, scopes: Sequence[str] = (READ_KILLMAILS,)
    ) -> str:
        """A refresh token of the scenario's application for a simulated character."""
        return self._sso_state.issue_refresh_token(character_id, tuple(scopes))

    def provision(
        self,
        scopes: Sequence[str] = (READ_KILLMAILS,),
        *,
        corporation_scopes_for: Iterable[int] | None = None,
    ) -> Provisioned:
        """URLs, the application and one fresh refresh token per simulated character.

        The characters of ``corporation_scopes_for`` (None: every current Director of the
        scenario's corporations) also get :data:`~killsim.scenario.CORPORATION_SCOPES`
        (corporation killmails and roles); without corporations nobody does."""
        if corporation_scopes_for is None:
            corporation_scopes_for = [
                d for info in self.world.corporations().values() for d in info.director_ids
            ]
        wider = set(corporation_scopes_for)
        logins: list[CharacterLogin] = []
        for char in self.world.characters:
            granted = tuple(scopes)
            if char.character_id in wider:
                granted += tuple(s for s in CORPORATION_SCOPES if s not in granted)
            token = self.issue_refresh_token(char.character_id, granted)
            logins.append(CharacterLogin(char.character_id, char.name, token, granted))
        return Provisioned(
            self.esi_url, self.sso_url, self.client_id, self.client_secret, tuple(logins)
        )

    def access_token(
        self,
        character_id: int,
        scopes: Sequence[str] = (READ_KILLMAILS,),
        lifetime_s: int | None = None,
        client_id: str | None = None,
    ) -> str:
        """A signed access token without the token endpoint (for ESI-only tests);
        ``client_id`` makes it another application's token."""
        grant = Grant(character_id, client_id or self.client_id, tuple(scopes))
        return self._sso_state.access_token(
            grant, lifetime_s or self.scenario.access_token_lifetime_s
        )

    def revoke(self, character_id: int) -> int:
        """Every refresh token of the character answers ``invalid_grant`` from now on."""
        return self._sso_state.revoke_character(character_id)

    def set_login_character(self, character_id: int | None) -> None:
        """Who ``/v2/oauth/authorize`` logs in (None: the user cancels)."""
        if character_id is not None and self.world.character(character_id) is None:
            raise KeyError(f"unknown character {character_id}")
        self._sso_state.login_character = character_id

    def sell_character(self, character_id: int, *, revoke: bool = False) -> str:
        """The character changes hands: a new owner hash (returned) in its next tokens."""
        return self._sso_state.sell_character(character_id, revoke=revoke)

    def owner_hash(self, character_id: int) -> str:
        """The character's current owner hash (the JWT ``owner`` claim)."""
        return self._sso_state.owner_hash(character_id)

    # -- dispatch -------------------------------------------------------------------------------

    def _app(self, request: Request) -> Response:
        sso = request.path == PREFIX or request.path.startswith(PREFIX + "/")
        template = (
            self._sso.route_template(request)
            if sso and self._sso is not None
            else self._esi.route_template(request)
        )
        has_agent = bool(
            request.header("user-agent")
            or request.header("x-user-agent")
            or request.param("user_agent")
        )
        self.stats.started(
            has_date=request.header("x-compatibility-date") is not None, has_agent=has_agent
        )
        try:
            response = self._sso(request) if sso and self._sso is not None else self._esi(request)
        except Exception:  # a simulator bug must show as a 500, not a dropped connection
            log.exception("simulator error on %s %s", request.method, request.path)
            self.stats.internal_error()
            response = Response.error(500, "Internal Server Error (simulator bug)")
        self.stats.finished(template, response.status)
        return response
