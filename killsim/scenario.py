"""Scenarios: every number the simulator runs with, in one frozen dataclass.

A scenario says what world to generate (characters, killmails, sharing, odd shapes),
how the servers behave (page size, list cache, token buckets, error limit, SSO options)
and which faults to inject. Benchmarks read the same numbers to compute lower bounds:
``scenario.buckets`` maps a rate-limit group to ``(limit_tokens, window_s)``.

Named scenarios (``Scenario.named(name, seed=...)``; all numbers are in their factory):

=============  ========================================================================
``smoke``      4 characters, 100 killmails (+3 older than 90 days), page size 50,
               ESI's real limits (char-killmail 30/15m, killmail 3600/15m), no faults.
``fleet``      40 characters, 4,000 killmails (+20 old), 40 % received by two
               characters, page size 37, char-killmail 30/10s, killmail 600/2s
               (a full sync from one IP needs >= ~25 s), no faults.
``incremental`` 3 characters, 40 killmails, page size 10, list cache 2 s,
               char-killmail 30/60s: for "new kills appear" tests.
``chaos``      5 characters, 300 killmails, page size 25, 5xx on lists/bodies/names,
               15 +- 10 ms latency, 1 % stalls of 20 s, 2 % malformed, 2 % truncated,
               downtime 6-9 s after start, 2 unknown ids, RS256/ES256 alternating.
``ratelimit``  2 characters, 60 killmails, page size 10, char-killmail 10/5s,
               killmail 20/5s, error limit 10 per 10 s.
``huge``       3 characters, 30 killmails, one of them with 3,800 attackers.
``corporation`` 8 characters, 3 in corporation A (2 directors) with 40 untracked
               members, 2 in B (1 director) with 4, 3 in neither; 1,500 killmails (half
               only untracked members receive), page size 23, char-/corp-killmail 30/15s,
               killmail 600/2s: A's list (~40 pages) needs more than one director's
               bucket allows in a window (15 pages), so a walk must rotate directors.
=============  ========================================================================

Corporations (``corporations`` > 0): the tracked characters are spread over that many
player corporations, round robin; the first ``directors_per_corporation`` of each have
the in-game role Director, the others none. Each corporation also has
``untracked_members`` characters who never log in, and ``untracked_kill_fraction`` of the
killmails are kills and losses of those members (or structure losses of the corporation)
only: no tracked character's own list holds them, their corporation's list does. With
``corporations = 0`` (the default) the world is exactly what it was before corporations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from killsim.errors import ScenarioError

READ_KILLMAILS = "esi-killmails.read_killmails.v1"
READ_CORP_KILLMAILS = "esi-killmails.read_corporation_killmails.v1"
READ_CORP_ROLES = "esi-characters.read_corporation_roles.v1"
#: The scopes a director's token needs for a corporation sync (with ``READ_KILLMAILS``).
CORPORATION_SCOPES = (READ_CORP_KILLMAILS, READ_CORP_ROLES)
DIRECTOR = "Director"
#: The two wordings ESI has used for a corporation route's missing role (403).
ROLE_ERRORS: Mapping[str, str] = MappingProxyType(
    {
        "old": "Character does not have required role(s)",
        "new": "The given character doesn't have the required role(s)",
    }
)
NOT_IN_CORPORATION = "Character is not in the corporation"

#: Rate-limit groups of the routes the simulator serves, as ESI publishes them
#: (``x-rate-limit`` in the 2026-08-18 OpenAPI document): group -> (tokens, window_s).
ESI_BUCKETS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "char-killmail": (30, 900),
        "corp-killmail": (30, 900),
        "char-detail": (600, 900),
        "killmail": (3600, 900),
        "status": (600, 900),
    }
)

#: Short route names used by fault settings and statistics.
ROUTE_NAMES = (
    "list",
    "corp_list",
    "roles",
    "body",
    "names",
    "affiliation",
    "character",
    "corporation",
    "alliance",
    "type",
    "system",
    "status",
)

SigningMode = Literal["RS256", "ES256", "alternate"]
ClientKind = Literal["confidential", "pkce"]
RoleErrorMode = Literal["old", "new", "alternate"]

_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([smh])\s*$")
_UNIT_S = MappingProxyType({"s": 1, "m": 60, "h": 3600})


def parse_limit(text: str) -> tuple[int, int]:
    """``"3600/15m"`` -> ``(3600, 900)``; units ``s``, ``m`` and ``h``."""
    match = _LIMIT_RE.match(text)
    if match is None:
        raise ScenarioError(f"not a rate limit like '3600/15m': {text!r}")
    return int(match.group(1)), int(match.group(2)) * _UNIT_S[match.group(3)]


def format_limit(limit_tokens: int, window_s: int) -> str:
    """``(3600, 900)`` -> ``"3600/15m"`` (ESI's ``X-Ratelimit-Limit`` format)."""
    if window_s % 3600 == 0:
        return f"{limit_tokens}/{window_s // 3600}h"
    if window_s % 60 == 0:
        return f"{limit_tokens}/{window_s // 60}m"
    return f"{limit_tokens}/{window_s}s"


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class FaultPlan:
    """Faults injected at random, deterministically by seed and per resource.

    Each decision hashes (seed, route, resource, attempt number), so the n-th request for
    the same killmail or list page gets the same fault whatever the request order.
    """

    #: route name -> probability of a 5xx answer (500/502/503/504).
    server_error_rate: Mapping[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    #: Probability that a request hangs for ``stall_s`` and then answers 504.
    stall_rate: float = 0.0
    stall_s: float = 30.0
    #: Probability of a 200 whose JSON is broken / whose body is cut short.
    malformed_rate: float = 0.0
    truncated_rate: float = 0.0
    #: Routes that stalls, malformed and truncated bodies apply to.
    routes: tuple[str, ...] = ("list", "body")
    #: Every ESI route answers 503 from ``start_s`` to ``end_s`` after the server started.
    downtime_s: tuple[float, float] | None = None
    #: The text of every injected error answer (ESI ``{"error": ...}``, the SSO's
    #: ``error_description``); None: the usual texts. For hostile bodies (controls, OSC).
    error_message: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "server_error_rate", _frozen_map(self.server_error_rate))
        object.__setattr__(self, "routes", tuple(self.routes))
        for route in (*self.server_error_rate, *self.routes):
            if route not in ROUTE_NAMES:
                raise ScenarioError(
                    f"faults: unknown route {route!r} (one of {', '.join(ROUTE_NAMES)})"
                )
        for name in ("stall_rate", "malformed_rate", "truncated_rate"):
            _check_rate(f"faults.{name}", getattr(self, name))
        for route, rate in self.server_error_rate.items():
            _check_rate(f"faults.server_error_rate.{route}", rate)
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.stall_s < 0:
            raise ScenarioError("faults: latency_ms, jitter_ms and stall_s must be >= 0")
        if self.downtime_s is not None:
            start, end = self.downtime_s
            if not 0 <= start < end:
                raise ScenarioError(
                    "faults.downtime_s: needs [start_s, end_s] with 0 <= start < end"
                )
            object.__setattr__(self, "downtime_s", (float(start), float(end)))


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ScenarioError(f"{name}: a probability between 0 and 1, got {value}")


@dataclass(frozen=True)
class Scenario:
    """Everything the simulator runs with. Build with :meth:`named`, :meth:`from_file`,
    the constructor, or :func:`dataclasses.replace` on any of those."""

    name: str = "custom"
    description: str = ""
    seed: int = 1
    # -- the world ----------------------------------------------------------------
    characters: int = 4  #: simulated characters (each can get a refresh token)
    killmails: int = 100  #: killmails within the last 90 days (listed)
    old_killmails: int = 3  #: killmails older than 90 days (never listed)
    shared_fraction: float = 0.25  #: share of killmails received by two characters
    npc_final_blow_fraction: float = 0.1  #: NPC final blow; the last player damager gets it
    structure_fraction: float = 0.05  #: structure victims (no character_id)
    huge_attackers: int = 0  #: >0: one killmail with this many attackers
    unknown_name_ids: int = 0  #: ids in killmails that /universe/names cannot resolve
    #: Names with terminal controls, OSC sequences and bidi overrides (``names.HOSTILE_NAMES``)
    hostile_names: bool = False
    killmail_id_start: int = 128_000_000
    #: Blueprint copies, SKINs and fitted ships in the ship hangar among the victims' items
    #: (what the valuation must handle); off keeps every older world's bodies as they were.
    valued_items: bool = False
    # -- corporations (0: none; the world is then exactly as without these knobs) --------
    corporations: int = 0  #: player corporations the tracked characters are spread over
    #: Tracked characters in each corporation, in character order (the rest stay outside
    #: them); empty: every character, round robin.
    corporation_members: tuple[int, ...] = ()
    #: The first N tracked members of each corporation are Directors (one number for all,
    #: or one per corporation); the others have no role.
    directors_per_corporation: int | tuple[int, ...] = 1
    #: Members of each corporation who never log in (one number for all, or one each).
    untracked_members: int | tuple[int, ...] = 0
    untracked_kill_fraction: float = 0.0  #: killmails only untracked members receive
    # -- ESI ------------------------------------------------------------------------
    page_size: int = 50
    list_cache_s: int = 300
    body_cache_s: int = 2_592_000
    buckets: Mapping[str, tuple[int, int]] = field(default_factory=lambda: dict(ESI_BUCKETS))
    error_limit: int = 100
    error_window_s: int = 60
    #: ``GET /markets/{region_id}/history`` per IP: requests per window, 500s beyond.
    market_history_limit: int = 300
    market_history_window_s: int = 60
    #: The 403 text of a corporation route without the role: ``ROLE_ERRORS["old"]``,
    #: ``["new"]``, or ``"alternate"`` (old, new, old, ... per refusal).
    role_error: RoleErrorMode = "old"
    # -- SSO ------------------------------------------------------------------------
    client_kind: ClientKind = "confidential"
    client_id: str | None = None  #: None: derived from the seed
    client_secret: str | None = None  #: None: derived from the seed (confidential apps)
    app_scopes: tuple[str, ...] = (READ_KILLMAILS, READ_CORP_KILLMAILS, READ_CORP_ROLES)
    callback_url: str | None = None  #: None: any http loopback redirect_uri is accepted
    rotate_refresh_tokens: bool = True
    access_token_lifetime_s: int = 1200
    signing: SigningMode = "RS256"
    login_character_index: int = 0
    # -- faults -------------------------------------------------------------------
    faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        buckets = {group: (int(lim), int(win)) for group, (lim, win) in self.buckets.items()}
        object.__setattr__(self, "buckets", MappingProxyType(buckets))
        object.__setattr__(self, "app_scopes", tuple(self.app_scopes))
        object.__setattr__(self, "corporation_members", tuple(self.corporation_members))
        for key in ("directors_per_corporation", "untracked_members"):
            value = getattr(self, key)
            if not isinstance(value, int):
                object.__setattr__(self, key, tuple(value))
        self._validate()

    def _validate(self) -> None:
        positive = {
            "characters": self.characters,
            "page_size": self.page_size,
            "list_cache_s": self.list_cache_s,
            "body_cache_s": self.body_cache_s,
            "error_limit": self.error_limit,
            "error_window_s": self.error_window_s,
            "market_history_limit": self.market_history_limit,
            "market_history_window_s": self.market_history_window_s,
            "access_token_lifetime_s": self.access_token_lifetime_s,
        }
        for key, value in positive.items():
            if value < 1:
                raise ScenarioError(f"{key}: must be at least 1, got {value}")
        for key in (
            "killmails",
            "old_killmails",
            "huge_attackers",
            "unknown_name_ids",
            "corporations",
        ):
            if getattr(self, key) < 0:
                raise ScenarioError(f"{key}: must be >= 0")
        if self.characters < 2 and self.shared_fraction > 0:
            raise ScenarioError("shared_fraction: needs at least 2 characters")
        for key in (
            "shared_fraction",
            "npc_final_blow_fraction",
            "structure_fraction",
            "untracked_kill_fraction",
        ):
            _check_rate(key, getattr(self, key))
        self._validate_corporations()
        self._validate_roles()
        for group, (limit, window) in self.buckets.items():
            if limit < 1 or window < 1:
                raise ScenarioError(f"buckets.{group}: limit and window must be >= 1")
        if self.client_kind not in ("confidential", "pkce"):
            raise ScenarioError(f"client_kind: 'confidential' or 'pkce', got {self.client_kind!r}")
        if self.signing not in ("RS256", "ES256", "alternate"):
            raise ScenarioError(f"signing: 'RS256', 'ES256' or 'alternate', got {self.signing!r}")
        if not 0 <= self.login_character_index < self.characters:
            raise ScenarioError("login_character_index: must name one of the characters")

    def per_corporation(self, key: str) -> tuple[int, ...]:
        """``directors_per_corporation`` or ``untracked_members`` as one number per
        corporation; ``corporation_members``: tracked members per corporation."""
        if key == "corporation_members":
            if self.corporation_members:
                return self.corporation_members
            n = self.corporations
            return tuple(len(range(i, self.characters, n)) for i in range(n))
        value = getattr(self, key)
        return (value,) * self.corporations if isinstance(value, int) else tuple(value)

    def _validate_corporations(self) -> None:
        if self.corporations > self.characters:
            raise ScenarioError("corporations: at most one per character")
        for key in ("corporation_members", "directors_per_corporation", "untracked_members"):
            value = getattr(self, key)
            numbers = (value,) if isinstance(value, int) else value
            if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in numbers):
                raise ScenarioError(f"{key}: whole numbers >= 0")
            if (
                not isinstance(value, int)
                and self.corporations
                and len(value)
                not in (
                    0,
                    self.corporations,
                )
            ):
                raise ScenarioError(f"{key}: one number per corporation ({self.corporations})")
        if not self.corporations:
            return
        members = self.per_corporation("corporation_members")
        if sum(members) > self.characters or 0 in members:
            raise ScenarioError("corporation_members: at least one each, at most characters in all")
        if len(self.per_corporation("untracked_members")) != self.corporations:
            raise ScenarioError("untracked_members: one number per corporation")
        directors = self.per_corporation("directors_per_corporation")
        if len(directors) != self.corporations or any(
            d > m for d, m in zip(directors, members, strict=True)
        ):
            raise ScenarioError(
                "directors_per_corporation: at most the tracked members of each corporation"
            )

    def _validate_roles(self) -> None:
        if self.untracked_kill_fraction > 0 and (
            self.corporations == 0 or not any(self.per_corporation("untracked_members"))
        ):
            raise ScenarioError("untracked_kill_fraction: needs corporations and untracked_members")
        if self.role_error not in ("old", "new", "alternate"):
            raise ScenarioError(f"role_error: 'old', 'new' or 'alternate', got {self.role_error!r}")

    # -- construction ---------------------------------------------------------------

    @classmethod
    def named(cls, name: str, *, seed: int = 1) -> Scenario:
        """One of the named scenarios (see the module docstring)."""
        factory = _NAMED.get(name)
        if factory is None:
            raise ScenarioError(f"unknown scenario {name!r} (one of {', '.join(_NAMED)})")
        return factory(seed)

    @classmethod
    def load(cls, spec: str, *, seed: int | None = None) -> Scenario:
        """A scenario name or a TOML file path (``seed`` overrides the file's)."""
        if spec.endswith(".toml") or Path(spec).is_file():
            scenario = cls.from_file(spec)
            return scenario if seed is None else replace(scenario, seed=seed)
        return cls.named(spec, seed=1 if seed is None else seed)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names :meth:`named` accepts."""
        return tuple(_NAMED)

    @classmethod
    def from_file(cls, path: Path | str) -> Scenario:
        """Load a TOML scenario (same keys as the dataclass; ``base = "smoke"`` starts
        from a named scenario; ``[buckets]`` and ``[faults]`` tables)."""
        from killsim.scenario_file import load_scenario_file  # noqa: PLC0415 - it imports us

        return load_scenario_file(Path(path))

    # -- derived numbers ------------------------------------------------------------

    def limit_header(self, group: str) -> str:
        """The ``X-Ratelimit-Limit`` value of a group, e.g. ``"3600/15m"``."""
        limit, window = self.buckets[group]
        return format_limit(limit, window)

    def describe(self) -> str:
        """The scenario's numbers in one line, for people and logs."""
        buckets = ", ".join(f"{g} {self.limit_header(g)}" for g in sorted(self.buckets))
        return (
            f"{self.name} (seed {self.seed}): {self.characters} characters, "
            f"{self.killmails} killmails (+{self.old_killmails} older than 90 days), "
            f"page size {self.page_size}, list cache {self.list_cache_s} s, {buckets}, "
            f"error limit {self.error_limit}/{self.error_window_s}s"
        )


def min_sync_time_s(
    limit_tokens: int, window_s: int, tokens_needed: int, cost_tokens: int = 2
) -> float:
    """Lower bound on the time to spend ``tokens_needed`` from one floating-window bucket.

    A request is admitted while fewer than ``limit_tokens`` are in use, so any span of one
    window can spend at most ``limit_tokens - 1 + cost_tokens``; spending N tokens thus
    takes at least ``(ceil(N / burst) - 1)`` windows.
    """
    burst = limit_tokens - 1 + cost_tokens
    return max(0, math.ceil(tokens_needed / burst) - 1) * float(window_s)


def min_rotating_sync_time_s(limit_tokens: int, window_s: int, pages: int, buckets: int) -> float:
    """Lower bound (seconds) of walking ``pages`` fresh pages (2 tokens each) when the walk
    may spread them over ``buckets`` equal buckets (a corporation's directors): the
    busiest bucket serves at least ``ceil(pages / buckets)`` pages."""
    if pages <= 0 or buckets <= 0:
        return 0.0
    return min_sync_time_s(limit_tokens, window_s, 2 * math.ceil(pages / buckets))


# -- named scenarios ------------------------------------------------------------------


def _smoke(seed: int) -> Scenario:
    return Scenario(
        name="smoke",
        seed=seed,
        characters=4,
        killmails=100,
        old_killmails=3,
        description="a handful of characters, real ESI limits, no faults",
    )


def _fleet(seed: int) -> Scenario:
    return Scenario(
        name="fleet",
        seed=seed,
        characters=40,
        killmails=4000,
        old_killmails=20,
        shared_fraction=0.4,
        page_size=37,
        buckets={"char-killmail": (30, 10), "killmail": (600, 2), "status": (600, 900)},
        description="an alliance: 4,000 killmails, compressed windows, no faults",
    )


def _incremental(seed: int) -> Scenario:
    return Scenario(
        name="incremental",
        seed=seed,
        characters=3,
        killmails=40,
        old_killmails=2,
        shared_fraction=0.3,
        page_size=10,
        list_cache_s=2,
        buckets={**ESI_BUCKETS, "char-killmail": (30, 60)},
        description="small world with a 2 s list cache, for new-kill tests",
    )


def _chaos(seed: int) -> Scenario:
    faults = FaultPlan(
        server_error_rate={"list": 0.05, "body": 0.08, "names": 0.05},
        latency_ms=15,
        jitter_ms=10,
        stall_rate=0.01,
        stall_s=20,
        malformed_rate=0.02,
        truncated_rate=0.02,
        downtime_s=(6.0, 9.0),
    )
    return Scenario(
        name="chaos",
        seed=seed,
        characters=5,
        killmails=300,
        old_killmails=5,
        shared_fraction=0.3,
        page_size=25,
        unknown_name_ids=2,
        signing="alternate",
        faults=faults,
        description="5xx, latency, stalls, broken bodies and a downtime",
    )


def _ratelimit(seed: int) -> Scenario:
    return Scenario(
        name="ratelimit",
        seed=seed,
        characters=2,
        killmails=60,
        old_killmails=2,
        shared_fraction=0.2,
        page_size=10,
        buckets={"char-killmail": (10, 5), "killmail": (20, 5), "status": (10, 5)},
        error_limit=10,
        error_window_s=10,
        description="tiny buckets and error limit: 429 and 420 come quickly",
    )


def _huge(seed: int) -> Scenario:
    return Scenario(
        name="huge",
        seed=seed,
        characters=3,
        killmails=30,
        old_killmails=1,
        huge_attackers=3800,
        description="includes a structure kill with 3,800 attackers",
    )


def _corporation(seed: int) -> Scenario:
    return Scenario(
        name="corporation",
        seed=seed,
        characters=8,
        killmails=1500,
        old_killmails=10,
        shared_fraction=0.25,
        corporations=2,
        corporation_members=(3, 2),  # characters 6-8 are in no scenario corporation
        directors_per_corporation=(2, 1),
        untracked_members=(40, 4),
        untracked_kill_fraction=0.5,
        page_size=23,
        buckets={
            "char-killmail": (30, 15),
            "corp-killmail": (30, 15),
            "char-detail": (600, 15),
            "killmail": (600, 2),
            "status": (600, 900),
        },
        description="two corporations; the big one's list outgrows one director's bucket",
    )


def _market(seed: int) -> Scenario:
    return Scenario(
        name="market",
        seed=seed,
        characters=3,
        killmails=200,
        old_killmails=3,
        structure_fraction=0.08,
        valued_items=True,
        description="blueprint copies, SKINs, fitted ships in hangars, capsules: for values",
    )


_NAMED: Mapping[str, Callable[[int], Scenario]] = MappingProxyType(
    {
        "smoke": _smoke,
        "fleet": _fleet,
        "incremental": _incremental,
        "chaos": _chaos,
        "ratelimit": _ratelimit,
        "huge": _huge,
        "corporation": _corporation,
        "market": _market,
    }
)

SCENARIO_FIELDS = frozenset(f.name for f in fields(Scenario))
FAULT_FIELDS = frozenset(f.name for f in fields(FaultPlan))

__all__ = [
    "CORPORATION_SCOPES",
    "DIRECTOR",
    "ESI_BUCKETS",
    "FAULT_FIELDS",
    "NOT_IN_CORPORATION",
    "READ_CORP_KILLMAILS",
    "READ_CORP_ROLES",
    "READ_KILLMAILS",
    "ROLE_ERRORS",
    "ROUTE_NAMES",
    "SCENARIO_FIELDS",
    "FaultPlan",
    "Scenario",
    "format_limit",
    "min_rotating_sync_time_s",
    "min_sync_time_s",
    "parse_limit",
]
