"""Webhook filters and the opsec delay, against a local Discord-like server.

Killmails are stored through the real write path (so the deliverer can read attackers the
event payload does not carry) and their `killmail.saved` events built by the sync
engine's own function; time is a manual clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.db.models import UniverseConstellation, UniverseGroup, UniverseSystem, UniverseType
from killcli.db.store import save_killmails
from killcli.errors import UsageError
from killcli.events.filters import (
    MinValueFilter,
    RegionFilter,
    ShipGroupFilter,
    SideFilter,
    SystemFilter,
)
from killcli.events.hookconfig import WebhookInfo, add_webhook, edit_webhook, get_webhook
from killcli.events.hookpost import RetryPolicy
from killcli.events.webhooks import DeliveryResult, RoundOutcome, deliver_pending, run_delivery
from killcli.killmail import format_time, parse_killmail
from killcli.kills import Owner, Side
from killcli.sso.crypto import TokenCipher
from killcli.sync.events import killmail_saved_events
from killcli.valuation import KillmailValuation
from killcli.values import save_values
from tests.conftest import CliResult
from tests.events.chat import ChatServer
from tests.events.conftest import add_events
from tests.factories import killmail

POLICY = RetryPolicy(attempts=2, backoff_s=0.01, backoff_cap_s=0.02, cooldown_s=60.0)
ME = 2_112_000_777
MY_CORP = 98_000_777
VICTIM_CORP = 98_000_001  # every factory victim's corporation
JITA, AMARR = 30_000_142, 30_002_187


def store_kill(
    db: Database,
    killmail_id: int,
    when: datetime,
    *,
    victim: int | None = None,
    attacker: int | None = None,
    attacker_corp: int | None = None,
    victim_corp: int | None = None,
    system: int = JITA,
    saver: int | None = None,
    saver_corp: int | None = None,
    ship: int | None = None,
) -> None:
    """Store a killmail (``attacker`` is a non-final attacker) and add its event, saved by
    ``saver``'s list or ``saver_corp``'s."""
    body = killmail(killmail_id, attackers=6, items=1)
    body["killmail_time"] = format_time(when)
    body["solar_system_id"] = system
    if victim is not None:
        body["victim"]["character_id"] = victim
    helper = next(a for a in body["attackers"] if not a["final_blow"])
    if attacker is not None:
        helper["character_id"] = attacker
    if attacker_corp is not None:
        helper["corporation_id"] = attacker_corp
    if victim_corp is not None:
        body["victim"]["corporation_id"] = victim_corp
    if ship is not None:
        body["victim"]["ship_type_id"] = ship
    rows = parse_killmail(body, killmail_hash="b" * 40)
    with db.session() as session:
        save_killmails(session, [rows])
    payloads = killmail_saved_events([rows], {}, character_id=saver, corporation_id=saver_corp)
    add_events(db, payloads)


@dataclass
class Setup:
    """A database, a local Discord, an HTTP client and a manual clock."""

    db: Database
    cipher: TokenCipher
    chat: ChatServer
    http: httpx.Client
    clock: ManualClock

    def hook(self, **kw: Any) -> WebhookInfo:
        return add_webhook(
            self.db, self.cipher, "discord", self.chat.discord_url(), allow_insecure=True, **kw
        )

    def deliver(self) -> DeliveryResult:
        return deliver_pending(self.db, self.cipher, self.http, self.clock, policy=POLICY)

    def posted(self) -> list[int]:
        return [int(b["embeds"][0]["title"].split()[-1]) for b in self.chat.posted]


@pytest.fixture
def setup(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> Setup:
    return Setup(db, cipher, chat, http, clock)


def _three_kills(db: Database, now: datetime) -> None:
    store_kill(db, 1, now, victim=ME)  # a loss of ME
    store_kill(db, 2, now, attacker=ME)  # a kill: ME helped, not the final blow
    store_kill(db, 3, now)  # ME took no part


@pytest.mark.parametrize(("side", "expected"), [(None, [1, 2]), (Side.KILL, [2]), (Side.LOSS, [1])])
def test_a_characters_kills_or_losses_only(
    setup: Setup,
    side: Side | None,
    expected: list[int],
) -> None:
    setup.hook(character_id=ME, filters=[SideFilter(side)] if side else [])
    _three_kills(setup.db, setup.clock.now())
    result = setup.deliver()
    assert setup.posted() == expected
    assert (result.posted, result.skipped) == (len(expected), 3 - len(expected))


@pytest.mark.parametrize(("side", "expected"), [(Side.KILL, [12]), (Side.LOSS, [11])])
def test_a_corporations_kills_or_losses_only(
    setup: Setup,
    side: Side,
    expected: list[int],
) -> None:
    setup.hook(corporation_id=MY_CORP, filters=[SideFilter(side)])
    now = setup.clock.now()
    store_kill(setup.db, 10, now)  # neither
    store_kill(setup.db, 12, now, attacker_corp=MY_CORP)  # a member helped: a kill
    store_kill(setup.db, 11, now, victim_corp=MY_CORP, saver_corp=MY_CORP)  # a loss
    setup.deliver()
    assert setup.posted() == expected


def test_a_system_filter_takes_several_systems(setup: Setup) -> None:
    setup.hook(filters=[SystemFilter((JITA, AMARR))])
    now = setup.clock.now()
    for killmail_id, system in [(21, JITA), (22, 30_000_001), (23, AMARR), (24, 30_045_000)]:
        store_kill(setup.db, killmail_id, now, system=system)
    setup.deliver()
    assert setup.posted() == [21, 23]


def cache_universe(db: Database, systems: dict[int, int], ships: dict[int, int]) -> None:
    """What the sync caches before it saves: system -> region (through one constellation
    per region) and ship type -> group."""
    with db.session() as session:
        for region in set(systems.values()):
            session.add(
                UniverseConstellation(constellation_id=region + 10_000_000, region_id=region)
            )
        for system, region in systems.items():
            session.add(
                UniverseSystem(
                    system_id=system, constellation_id=region + 10_000_000, security_status=0.5
                )
            )
        for group in set(ships.values()):
            session.add(UniverseGroup(group_id=group, category_id=6))
        for ship, group in ships.items():
            session.add(UniverseType(type_id=ship, group_id=group))


THE_FORGE, DOMAIN = 10_000_002, 10_000_043
TITANS, FRIGATES = 30, 25


def test_region_and_ship_group_filters_read_the_universe_cache(setup: Setup) -> None:
    setup.hook(filters=[RegionFilter((DOMAIN,)), ShipGroupFilter((TITANS,))])
    cache_universe(setup.db, {JITA: THE_FORGE, AMARR: DOMAIN}, {11567: TITANS, 587: FRIGATES})
    now = setup.clock.now()
    kills = [(51, AMARR, 11567), (52, AMARR, 587), (53, JITA, 11567), (54, 30_000_001, 11567)]
    for killmail_id, system, ship in kills:
        store_kill(setup.db, killmail_id, now, system=system, ship=ship)
    setup.deliver()
    # 52 is a frigate, 53 in The Forge, 54 in a system whose region is not known
    assert setup.posted() == [51]


def test_cli_region_and_ship_group_options(
    cli: Callable[..., CliResult], secret_key: str, chat: ChatServer
) -> None:
    assert cli("db", "upgrade").exit_code == 0
    added = cli(
        "webhooks", "add", "discord", "-", "--allow-insecure", "--region", str(DOMAIN),
        "--ship-group", str(TITANS), "--min-value", "1.5b",
        stdin=chat.discord_url() + "\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert "regions 10000043, ship groups 30, worth at least 1.50b ISK" in added.stderr
    assert cli("webhooks", "edit", "1", "--all-regions", "--any-value").exit_code == 0
    [hook] = json.loads(cli("webhooks", "list", "--json").stdout)["data"]
    assert hook["filters"] == {"ship_groups": [TITANS]}


def value_of(killmail_id: int, total: str) -> KillmailValuation:
    amount = Decimal(total)
    return KillmailValuation(
        killmail_id, amount, amount, Decimal(0), amount, Decimal(0), date(2026, 1, 1), "zkb-1", ()
    )


def test_a_minimum_value_reads_the_value_stored_by_the_time_the_kill_is_due(
    setup: Setup,
) -> None:
    setup.hook(filters=[MinValueFilter(Decimal("1000000000"))], delay_s=600, max_age_s=3600)
    now = setup.clock.now()
    for killmail_id in (31, 32, 33, 34):
        store_kill(setup.db, killmail_id, now)
    with setup.db.session() as session:  # valued when saved: a big one and a small one
        save_values(session, [value_of(31, "1500000000.00"), value_of(32, "999999999.99")])
    held = setup.deliver()
    assert held.held_until is not None and setup.posted() == []  # the delay holds them
    with setup.db.session() as session:  # `killsync values` runs before the kills are due
        save_values(session, [value_of(33, "1000000000.00")])
    setup.clock.advance(601)
    setup.deliver()
    assert setup.posted() == [31, 33]  # 32 is too cheap; 34 was never valued: not posted


def test_a_minimum_value_in_the_event_is_enough(setup: Setup) -> None:
    setup.hook(filters=[MinValueFilter(Decimal("500000000"))])
    now = setup.clock.now()
    body = killmail(41, attackers=3, items=1)
    body["killmail_time"] = format_time(now)
    rows = parse_killmail(body, killmail_hash="b" * 40)
    with setup.db.session() as session:
        save_killmails(session, [rows])
    add_events(setup.db, killmail_saved_events([rows], {}, values={41: value_of(41, "6e8")}))
    setup.deliver()
    assert setup.posted() == [41]


def test_a_delay_holds_the_kill_and_all_after_it_until_it_is_old_enough(setup: Setup) -> None:
    info = setup.hook(delay_s=600, max_age_s=3600)
    now = setup.clock.now()
    store_kill(setup.db, 31, now - timedelta(seconds=100))  # due at +500 s
    store_kill(setup.db, 32, now - timedelta(seconds=2000))  # due already, but after 31
    # Posted at +501 s, 69 min old: older than the max age, fresh after the delay (60 + 10).
    store_kill(setup.db, 33, now - timedelta(seconds=3650))
    store_kill(setup.db, 34, now - timedelta(seconds=4300))  # older than delay + max age
    held = setup.deliver()
    assert held.rounds[0].outcome is RoundOutcome.HELD and setup.chat.posted == []
    assert held.held_until == now - timedelta(seconds=100) + timedelta(seconds=600)
    assert get_webhook(setup.db, setup.cipher, info.id).cursor_event_id == info.cursor_event_id
    setup.clock.advance(499)
    assert setup.deliver().rounds[0].outcome is RoundOutcome.HELD
    assert setup.chat.posted == []
    setup.clock.advance(2)
    done = setup.deliver()
    assert done.rounds[0].outcome is RoundOutcome.DONE
    assert setup.posted() == [31, 32, 33]
    assert (done.posted, done.skipped) == (3, 1)


def test_a_delay_applies_after_the_filters(setup: Setup) -> None:
    setup.hook(character_id=ME, delay_s=300, filters=[SideFilter(Side.LOSS)])
    now = setup.clock.now()
    store_kill(setup.db, 41, now, attacker=ME)  # not a loss: skipped at once, never held
    store_kill(setup.db, 42, now - timedelta(seconds=400), victim=ME)
    result = setup.deliver()
    assert result.rounds[0].outcome is RoundOutcome.DONE
    assert setup.posted() == [42]


def test_edit_changes_the_selection_and_keeps_what_is_not_given(setup: Setup) -> None:
    info = setup.hook(character_id=ME, filters=[SideFilter(Side.KILL)])
    changed = edit_webhook(setup.db, setup.cipher, info.id, delay_s=60)
    assert (changed.character_id, changed.filters, changed.delay_s) == (ME, {"side": "kill"}, 60)
    changed = edit_webhook(
        setup.db, setup.cipher, info.id, filters=[SideFilter(Side.LOSS)], delay_s=0
    )
    _three_kills(setup.db, setup.clock.now())
    setup.deliver()
    assert changed.filters == {"side": "loss"} and setup.posted() == [1]


def test_cli_add_edit_and_list_show_the_filters(
    cli: Callable[..., CliResult], secret_key: str, chat: ChatServer
) -> None:
    assert cli("db", "upgrade").exit_code == 0
    url = chat.discord_url() + "\n"
    added = cli(
        "webhooks", "add", "discord", "-", "--allow-insecure", "--corporation", str(MY_CORP),
        "--losses-only", "--delay", "30m", "--system", str(JITA), "--system", str(AMARR),
        stdin=url,
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert "losses only" in added.stderr and "delayed 1800 s" in added.stderr
    edited = cli("webhooks", "edit", "1", "--all-systems", "--kills-only", "--delay", "0")
    assert edited.exit_code == 0, edited.stderr
    listed = cli("webhooks", "list", "--json")
    [row] = json.loads(listed.stdout)["data"]
    assert (row["corporation_id"], row["character_id"]) == (MY_CORP, None)
    assert (row["filters"], row["delay_s"]) == ({"side": "kill"}, 0)
    table = cli("webhooks", "list")
    assert "kills only" in table.stdout and "corporation 98000777" in table.stdout


def test_an_owner_is_a_character_or_a_corporation() -> None:
    with pytest.raises(UsageError, match="not both"):
        Owner(ME, MY_CORP)


def test_the_delivery_loop_sleeps_until_the_held_kill_is_due(setup: Setup) -> None:
    setup.hook(delay_s=600)
    store_kill(setup.db, 51, setup.clock.now() - timedelta(seconds=100))  # due in 500 s
    pauses: list[float] = []

    def wait(seconds: float) -> bool:
        pauses.append(seconds)
        setup.clock.advance(seconds)
        return bool(setup.chat.posted) or len(pauses) > 5

    totals = run_delivery(
        setup.db,
        setup.cipher,
        setup.http,
        wait=wait,
        poll_s=3600.0,
        clock=setup.clock,
        policy=POLICY,
    )
    assert abs(pauses[0] - 500) < 1  # not the poll interval: exactly until it is due
    assert (totals.posted, setup.posted()) == (1, [51])
