"""Which kills a webhook posts, and when: its owner, its filters, the fresh-only rule and the
opsec delay.

A webhook may follow an **owner** (a tracked character or corporation, the
``character_id``/``corporation_id`` columns): then only that owner's kills and losses
are posted. A kill is the owner's **loss** when the owner is the victim (its character,
its corporation); its **kill** when it attacked: the payload says so (its list held the
kill, it got the final blow) or, for the attackers the payload does not carry, the stored
``killmail_attackers`` rows do.

**Filters** (the ``filters`` JSON column, ``{kind: setting}``) each narrow what is posted
(the owner's side, solar systems, regions, the victim's ship group, a minimum ISK value);
a kill is posted when every filter accepts it. Filters of what cannot change (side,
systems, regions and ship groups, read from the universe cache that the sync fills before
it saves) decide at once; the value filter (``when_due``) decides when the kill is due,
after the delay, from the value stored by then (`killsync values` may value it after it
was saved). A new kind of filter is one class here with a ``kind``, ``when_due``,
``accepts``, ``setting``, ``from_setting`` and ``describe``, added to
:data:`FILTER_KINDS` (no migration: the column is JSON).

**Time**: a kill is posted once it is ``delay_s`` old (opsec; until then the outbox holds
it and everything after it, so the channel's order is kept) and while it is younger than
``delay_s + max_age_s`` (the fresh-only rule, counted from the end of the delay: a
backfill is never announced).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from sqlalchemy import select

from killcli.db import Database
from killcli.db.models import Attacker, table_of
from killcli.errors import UsageError
from killcli.events.render import isk_compact, killmail_time, value_total
from killcli.kills import Owner, Side
from killcli.universe import get_systems, get_types
from killcli.values import get_values

ATTACKERS = table_of(Attacker)
MAX_SYSTEMS = 1000


def _party(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, Mapping) else {}


@dataclass
class KillFacts:
    """What filters read of one `killmail.saved` event: its payload, and (read once, when
    a filter asks) the stored attackers the payload does not carry."""

    payload: Mapping[str, Any]
    db: Database
    _attackers: list[tuple[int | None, int | None]] | None = field(default=None, repr=False)

    def attackers(self) -> list[tuple[int | None, int | None]]:
        """``(character_id, corporation_id)`` of every stored attacker."""
        if self._attackers is None:
            killmail_id = self.payload.get("killmail_id")
            if not isinstance(killmail_id, int):
                self._attackers = []
            else:
                query = select(ATTACKERS.c.character_id, ATTACKERS.c.corporation_id).where(
                    ATTACKERS.c.killmail_id == killmail_id
                )
                with self.db.session() as session:
                    self._attackers = [(row[0], row[1]) for row in session.execute(query)]
        return self._attackers

    def value(self) -> Decimal | None:
        """The kill's ISK value: the event's, else the one stored since (``killsync
        values`` may have valued it after the event was written); None while unvalued."""
        total = value_total(self.payload.get("value"))
        killmail_id = self.payload.get("killmail_id")
        if total is not None or not isinstance(killmail_id, int):
            return total
        with self.db.session() as session:
            stored = get_values(session, [killmail_id]).get(killmail_id)
        return None if stored is None else stored.total

    def region_id(self) -> int | None:
        """The region of the kill's system, from the universe cache (the sync fills it
        before it saves); None while unknown."""
        system_id = self.payload.get("solar_system_id")
        if not isinstance(system_id, int):
            return None
        with self.db.session() as session:
            found = get_systems(session, [system_id]).get(system_id)
        return None if found is None else found.region_id

    def victim_ship_group(self) -> int | None:
        """The group of the victim's ship (or structure), from the universe cache."""
        ship = _party(self.payload, "victim").get("ship_type_id")
        if not isinstance(ship, int):
            return None
        with self.db.session() as session:
            found = get_types(session, [ship]).get(ship)
        return None if found is None else found.group_id

    def side_of(self, owner: Owner) -> Side | None:
        """The owner's loss, its kill, or None when it took no part."""
        victim, blow = _party(self.payload, "victim"), _party(self.payload, "final_blow")
        key, wanted, index = (
            ("character_id", owner.character_id, 0)
            if owner.character_id is not None
            else ("corporation_id", owner.corporation_id, 1)
        )
        if victim.get(key) == wanted:
            return Side.LOSS
        if self.payload.get(key) == wanted or blow.get(key) == wanted:
            return Side.KILL  # its list held the kill (and it is not the victim)
        if any(attacker[index] == wanted for attacker in self.attackers()):
            return Side.KILL
        return None


class KillFilter(Protocol):
    """One narrowing of what a webhook posts. ``when_due`` filters read what may change
    after the kill was saved (its value) and are applied when the kill is due, after the
    delay; the others at once (a kill they refuse never holds the channel)."""

    kind: ClassVar[str]
    when_due: ClassVar[bool]

    def accepts(self, kill: KillFacts, owner: Owner | None) -> bool: ...

    def setting(self) -> Any:
        """The JSON stored under :attr:`kind`."""
        ...

    def describe(self) -> str:
        """A few words for `webhooks list`."""
        ...


@dataclass(frozen=True)
class SideFilter:
    """Only the owner's kills (``--kills-only``) or only its losses (``--losses-only``)."""

    side: Side
    kind: ClassVar[str] = "side"
    when_due: ClassVar[bool] = False

    def accepts(self, kill: KillFacts, owner: Owner | None) -> bool:
        return owner is not None and kill.side_of(owner) is self.side

    def setting(self) -> Any:
        return str(self.side)

    @classmethod
    def from_setting(cls, value: Any) -> SideFilter:
        return cls(Side(value))

    def describe(self) -> str:
        return "kills only" if self.side is Side.KILL else "losses only"


@dataclass(frozen=True)
class SystemFilter:
    """Only kills in these solar systems (``--system``, repeatable)."""

    system_ids: tuple[int, ...]
    kind: ClassVar[str] = "systems"
    when_due: ClassVar[bool] = False

    def accepts(self, kill: KillFacts, owner: Owner | None) -> bool:
        return kill.payload.get("solar_system_id") in self.system_ids

    def setting(self) -> Any:
        return list(self.system_ids)

    @classmethod
    def from_setting(cls, value: Any) -> SystemFilter:
        return cls(tuple(int(v) for v in value))

    def describe(self) -> str:
        return "systems " + ", ".join(map(str, self.system_ids))


@dataclass(frozen=True)
class RegionFilter:
    """Only kills in these regions (``--region``, repeatable); a kill whose system's
    region is not known is not posted."""

    region_ids: tuple[int, ...]
    kind: ClassVar[str] = "regions"
    when_due: ClassVar[bool] = False

    def accepts(self, kill: KillFacts, owner: Owner | None) -> bool:
        return kill.region_id() in self.region_ids

    def setting(self) -> Any:
        return list(self.region_ids)

    @classmethod
    def from_setting(cls, value: Any) -> RegionFilter:
        return cls(tuple(int(v) for v in value))

    def describe(self) -> str:
        return "regions " + ", ".join(map(str, self.region_ids))


@dataclass(frozen=True)
class ShipGroupFilter:
    """Only kills whose victim's ship is of these inventory groups (``--ship-group``,
    repeatable: 27 battleships, 30 titans, 1657 citadels...); an unknown ship is refused."""

    group_ids: tuple[int, ...]
    kind: ClassVar[str] = "ship_groups"
    when_due: ClassVar[bool] = False

    def accepts(self, kill: KillFacts, owner: Owner | None) -> bool:
        return kill.victim_ship_group() in self.group_ids

    def setting(self) -> Any:
        return list(self.group_ids)

    @classmethod
    def from_setting(cls, value: Any) -> ShipGroupFilter:
        return cls(tuple(int(v) for v in value))

    def describe(self) -> str:
        return "ship groups " + ", ".join(map(str, self.group_ids))


@dataclass(frozen=True)
class MinValueFilter:
    """Only kills worth at least ``min_isk`` (``--min-value``). A kill not valued by the
    time it is due is not posted: run `killsync values` after `prices sync` (and give
    it time with ``--delay``)."""

    min_isk: Decimal
    kind: ClassVar[str] = "min_value"
    when_due: ClassVar[bool] = True

    def accepts(self, kill: KillFacts, owner: Owner | None) -> bool:
        value = kill.value()
        return value is not None and value >= self.min_isk

    def setting(self) -> Any:
        return str(self.min_isk)

    @classmethod
    def from_setting(cls, value: Any) -> MinValueFilter:
        return cls(Decimal(str(value)))

    def describe(self) -> str:
        return f"worth at least {isk_compact(self.min_isk)} ISK"


FILTER_KINDS: dict[str, Any] = {
    kind.kind: kind
    for kind in (SideFilter, SystemFilter, RegionFilter, ShipGroupFilter, MinValueFilter)
}
#: the filters that are sets of ids: (kind, class, the option that sets it)
ID_FILTERS = (
    ("systems", SystemFilter, "--system"),
    ("regions", RegionFilter, "--region"),
    ("ship_groups", ShipGroupFilter, "--ship-group"),
)


def load_filters(stored: Mapping[str, Any] | None) -> list[KillFilter]:
    """The filters of a ``filters`` column (unknown kinds, from a newer killsync, are kept
    out: they cannot be applied, and `webhooks list` shows the column as stored)."""
    return [
        FILTER_KINDS[kind].from_setting(value)
        for kind, value in (stored or {}).items()
        if kind in FILTER_KINDS
    ]


def dump_filters(filters: Iterable[KillFilter]) -> dict[str, Any] | None:
    """The ``filters`` column for these filters (None: no filter)."""
    stored = {f.kind: f.setting() for f in filters}
    return stored or None


def make_filters(
    *,
    side: Side | None,
    system_ids: Iterable[int] = (),
    min_value: Decimal | None = None,
    region_ids: Iterable[int] = (),
    ship_group_ids: Iterable[int] = (),
) -> list[KillFilter]:
    """The filters the command-line options ask for."""
    filters: list[KillFilter] = []
    if side is not None:
        filters.append(SideFilter(side))
    given = {"systems": system_ids, "regions": region_ids, "ship_groups": ship_group_ids}
    for kind, cls, option in ID_FILTERS:
        ids = tuple(sorted(set(given[kind])))
        if len(ids) > MAX_SYSTEMS:
            raise UsageError(f"{option}: at most {MAX_SYSTEMS} ids")
        if ids:
            filters.append(cls(ids))
    if min_value is not None:
        filters.append(MinValueFilter(min_value))
    return filters


@dataclass(frozen=True)
class FilterEdit:
    """What `webhooks edit` changes in a webhook's filters: the filters its options ask
    for replace those of their kinds, and the kinds in ``dropped`` (``--all-sides``,
    ``--all-systems``, ``--all-regions``, ``--all-ship-groups``, ``--any-value``) go.
    Asking for a kind and dropping it is a usage error, raised when the edit is built
    (before any webhook is read)."""

    new: tuple[KillFilter, ...] = ()
    dropped: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if {f.kind for f in self.new} & self.dropped:
            raise UsageError(
                "a filter option and its --all-.../--any-... option contradict each other"
            )

    def __bool__(self) -> bool:
        return bool(self.new or self.dropped)

    def apply(self, current: Iterable[KillFilter]) -> list[KillFilter]:
        kept = {f.kind: f for f in current if f.kind not in self.dropped}
        kept.update({f.kind: f for f in self.new})
        return list(kept.values())


def check_selection(owner: Owner | None, filters: Iterable[KillFilter]) -> None:
    """A side filter needs an owner: kills and losses of whom?"""
    if owner is None and any(isinstance(f, SideFilter) for f in filters):
        raise UsageError("--kills-only and --losses-only need --character or --corporation")


class Verdict(StrEnum):
    POST = "post"
    SKIP = "skip"  # not for this webhook, or too old: the cursor moves past it
    HOLD = "hold"  # for this webhook, not old enough yet: the round stops before it


@dataclass(frozen=True)
class Selection:
    """Everything that decides whether and when a webhook posts an event."""

    owner: Owner | None
    filters: tuple[KillFilter, ...]
    max_age_s: int
    delay_s: int

    def judge(
        self, payload: Mapping[str, Any], db: Database, now: datetime
    ) -> tuple[Verdict, datetime | None]:
        """Post, skip, or hold until the returned time."""
        kill = KillFacts(payload, db)
        if self.owner is not None and kill.side_of(self.owner) is None:
            return Verdict.SKIP, None
        if not all(f.accepts(kill, self.owner) for f in self.filters if not f.when_due):
            return Verdict.SKIP, None
        when = killmail_time(payload)
        # No readable time: cannot tell a fresh kill from a backfill, so do not announce it.
        if when is None or when < now - timedelta(seconds=self.delay_s + self.max_age_s):
            return Verdict.SKIP, None
        due = when + timedelta(seconds=self.delay_s)
        if due > now:
            return Verdict.HOLD, due
        if not all(f.accepts(kill, self.owner) for f in self.filters if f.when_due):
            return Verdict.SKIP, None
        return Verdict.POST, None
