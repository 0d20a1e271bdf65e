"""An ESI + EVE SSO simulator for tests, benchmarks and ``killsync demo``.

It serves ESI at the root and the SSO under ``/sso`` of one port on 127.0.0.1, over
real HTTP/1.1 with keep-alive, and behaves like the real services as described in the
project's ESI notes: token buckets with a floating window, the per-IP error limit,
list caches with ``Last-Modified``/``ETag``/``X-Pages``, rotating refresh tokens, JWTs
signed with RS256 or ES256, and faults on demand. ::

    from killsim import Scenario, SimServer

    scenario = Scenario.named("smoke", seed=1)      # or Scenario.from_file("s.toml")
    with SimServer(scenario, port=0) as sim:
        sim.esi_url, sim.sso_url                    # "http://127.0.0.1:PORT", ".../sso"
        sim.client_id, sim.client_secret            # secret is None for a PKCE app
        char = sim.world.characters[0].character_id
        token = sim.issue_refresh_token(char)       # scopes default to read_killmails
        truth = sim.world.ground_truth()            # {character_id: {killmail_id: hash}}
        body = sim.world.body(next(iter(truth[char])))   # the exact ESI JSON
        new_id = sim.world.add_kill(victim=char)    # listed once the list cache refreshes
        sim.faults.refresh_list(char)               # ... which this forces
        sim.faults.fail_body(new_id, status=500, times=1)
        sim.revoke(char)                            # its refresh tokens: invalid_grant
        sim.stats.snapshot().count("/killmails/{killmail_id}/{killmail_hash}", 200)

Corporations (``Scenario.named("corporation")`` or ``corporations=N``)::

        corps = sim.world.corporations()            # {id: CorporationInfo(directors, ...)}
        sim.provision()                             # directors' tokens carry CORPORATION_SCOPES
        sim.world.corporation_ground_truth()        # {corporation_id: [killmail_id, ...]}
        sim.world.set_roles(director, [])           # loses Director: 403 on the corp route
        sim.world.move_character(director, other)   # 403 "Character is not in the corporation"
        sim.world.add_corporation_kill(corp_id)     # an untracked member's kill
        sim.faults.refresh_corporation_list(corp_id)

Pass ``clock=ManualClock()`` to move time by hand (``clock.advance(900)``) and
``keys=SigningKeys.generate()`` made once to share signing keys between servers.
``bench/bench_sim.py`` measures the server's sustained requests per second.

The simulator is the other side of every test of killsync's client, so it shares no
code with it: it imports nothing from ``killcli`` (``tests/test_layout.py`` checks),
writes ESI's numbers and times with its own code (:mod:`killsim.esi_format`) and
reports bad scenarios and busy ports with its own exceptions (:mod:`killsim.errors`),
which ``killsync sim serve`` and ``killsync demo`` turn into killsync's errors.
"""

from __future__ import annotations

from killsim.clock import Clock, ManualClock, SystemClock
from killsim.faults import Faults
from killsim.keys import ES256_KID, RS256_KID, SigningKeys
from killsim.scenario import (
    CORPORATION_SCOPES,
    DIRECTOR,
    ESI_BUCKETS,
    NOT_IN_CORPORATION,
    READ_CORP_KILLMAILS,
    READ_CORP_ROLES,
    READ_KILLMAILS,
    ROLE_ERRORS,
    FaultPlan,
    Scenario,
    format_limit,
    min_rotating_sync_time_s,
    min_sync_time_s,
    parse_limit,
)
from killsim.server import SimServer
from killsim.stats import Stats, StatsSnapshot
from killsim.world import (
    CorporationInfo,
    Roles,
    WorkloadSummary,
    World,
    ids_in_body,
    is_npc_corporation,
)

__all__ = [
    "CORPORATION_SCOPES",
    "DIRECTOR",
    "ES256_KID",
    "ESI_BUCKETS",
    "NOT_IN_CORPORATION",
    "READ_CORP_KILLMAILS",
    "READ_CORP_ROLES",
    "READ_KILLMAILS",
    "ROLE_ERRORS",
    "RS256_KID",
    "Clock",
    "CorporationInfo",
    "FaultPlan",
    "Faults",
    "ManualClock",
    "Roles",
    "Scenario",
    "SigningKeys",
    "SimServer",
    "Stats",
    "StatsSnapshot",
    "SystemClock",
    "WorkloadSummary",
    "World",
    "format_limit",
    "ids_in_body",
    "is_npc_corporation",
    "min_rotating_sync_time_s",
    "min_sync_time_s",
    "parse_limit",
]
