"""SQLAlchemy 2 typed models: the killsync schema.

Every EVE id is a BIGINT. Killmails are stored losslessly in normalized tables:
the victim's fields live on ``killmails``; attackers keep their ESI order in
``position``; items keep their ESI order in ``position`` with ``parent_position`` pointing
at the container row they sat in. Fields ESI may add in the future land in ``extra``
(JSON) so that an export reproduces the body exactly even across schema changes.
"""

from __future__ import annotations

import datetime as dt
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    desc,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from killcli.db.types import BigIntPK, Double, StrEnumText, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class CharacterStatus(StrEnum):
    """Whether a tracked character is synced (``characters.status``, stored as the value)."""

    ACTIVE = "active"  # synced and queued
    NEEDS_LOGIN = "needs_login"  # its refresh token is gone or lacks the scope: `killsync login`
    DISABLED = "disabled"  # an operator turned it off (`killsync users disable`)


class DirectorStatus(StrEnum):
    """Whether a character's token can read its corporation's killmails
    (``corporation_directors.status``); never affects the character's own sync."""

    UNCHECKED = "unchecked"  # granted the corporation scopes, roles not read yet
    USABLE = "usable"  # a Director of ``corporation_id``: its token reads the corp list
    NO_ROLE = "no_role"  # in the corporation without the Director role
    NOT_IN_CORPORATION = "not_in_corporation"  # ESI says it left (a 403); re-checked later
    NPC_CORPORATION = "npc_corporation"  # in an NPC corporation, which has no such list
    NO_SCOPE = "no_scope"  # its token lacks one of the corporation scopes: `login --corporation`


class CorporationStatus(StrEnum):
    """Whether a tracked corporation can be synced (``corporations.status``)."""

    ACTIVE = "active"  # at least one usable director
    NO_DIRECTOR = "no_director"  # no usable director's token: nothing is requested


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        int: BigInteger,
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
    }


def table_of(model: type[Base]) -> Table:
    """The Core ``Table`` of a model, for ``insert(...)``, ``.c`` and bulk statements.

    SQLAlchemy types ``Model.__table__`` as a ``FromClause`` (a class may map a join or a
    select); every killsync model maps exactly one table, which this checks once.
    """
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return table


class Killmail(Base):
    __tablename__ = "killmails"
    # `killsync kills`: newest first with the id as tie-break, read backwards from the top.
    __table_args__ = (Index(None, "killmail_time", "killmail_id"),)

    killmail_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    killmail_hash: Mapped[str | None] = mapped_column(String(64))
    killmail_time: Mapped[datetime] = mapped_column(index=True)
    solar_system_id: Mapped[int]
    moon_id: Mapped[int | None]
    war_id: Mapped[int | None]
    victim_character_id: Mapped[int | None] = mapped_column(index=True)
    victim_corporation_id: Mapped[int | None] = mapped_column(index=True)
    victim_alliance_id: Mapped[int | None] = mapped_column(index=True)
    victim_faction_id: Mapped[int | None]
    victim_ship_type_id: Mapped[int]
    victim_damage_taken: Mapped[int]
    position_x: Mapped[float | None] = mapped_column(Double)
    position_y: Mapped[float | None] = mapped_column(Double)
    position_z: Mapped[float | None] = mapped_column(Double)
    # ESI sends `items` even when empty; keep whether it was there.
    victim_has_items: Mapped[bool] = mapped_column(Boolean)
    attacker_count: Mapped[int] = mapped_column(Integer)
    final_blow_character_id: Mapped[int | None] = mapped_column(index=True)
    # Unknown fields: {"killmail": {...}, "victim": {...}, "position": {...}}.
    extra: Mapped[dict[str, Any] | None]
    saved_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attacker(Base):
    __tablename__ = "killmail_attackers"
    __table_args__ = (Index(None, "character_id", "killmail_id"),)

    killmail_id: Mapped[int] = mapped_column(
        ForeignKey("killmails.killmail_id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    character_id: Mapped[int | None]
    corporation_id: Mapped[int | None]
    alliance_id: Mapped[int | None]
    faction_id: Mapped[int | None]
    damage_done: Mapped[int]
    final_blow: Mapped[bool] = mapped_column(Boolean)
    security_status: Mapped[float] = mapped_column(Double)
    ship_type_id: Mapped[int | None]
    weapon_type_id: Mapped[int | None]
    extra: Mapped[dict[str, Any] | None]


class Item(Base):
    __tablename__ = "killmail_items"
    __table_args__ = (
        ForeignKeyConstraint(
            ["killmail_id", "parent_position"],
            ["killmail_items.killmail_id", "killmail_items.position"],
            ondelete="CASCADE",
        ),
    )

    killmail_id: Mapped[int] = mapped_column(
        ForeignKey("killmails.killmail_id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent_position: Mapped[int | None] = mapped_column(Integer)
    item_type_id: Mapped[int]
    flag: Mapped[int]
    singleton: Mapped[int]
    quantity_destroyed: Mapped[int | None]
    quantity_dropped: Mapped[int | None]
    has_children: Mapped[bool] = mapped_column(Boolean)
    extra: Mapped[dict[str, Any] | None]


class Character(Base):
    """A character that logged in through EVE SSO and is being synced."""

    __tablename__ = "characters"

    character_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    owner_hash: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(Text, default="")
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None]
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[CharacterStatus] = mapped_column(
        StrEnumText(CharacterStatus, 20), default=CharacterStatus.ACTIVE, index=True
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None]
    list_etag: Mapped[str | None] = mapped_column(String(200))
    list_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The newest killmail_time among its linked killmails (kept by `link_characters`): the
    # adaptive cadence reads it instead of joining every character's killmails per cron run.
    newest_killmail_at: Mapped[datetime | None] = mapped_column(index=True)


class CharacterKillmail(Base):
    """Which tracked character received which killmail (its ESI list held it)."""

    __tablename__ = "character_killmails"

    character_id: Mapped[int] = mapped_column(
        ForeignKey("characters.character_id", ondelete="CASCADE"), primary_key=True
    )
    killmail_id: Mapped[int] = mapped_column(primary_key=True, index=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Corporation(Base):
    """A corporation whose killmails are synced through its directors' tokens; tracked
    when a director logs in (never an NPC corporation). ``enabled`` is the operator's
    switch (`killsync corporations disable`), ``status`` whether a director can read it."""

    __tablename__ = "corporations"

    corporation_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[CorporationStatus] = mapped_column(
        StrEnumText(CorporationStatus, 20), default=CorporationStatus.ACTIVE, index=True
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    list_etag: Mapped[str | None] = mapped_column(String(200))
    list_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    newest_killmail_at: Mapped[datetime | None]  # the adaptive cadence reads it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CorporationKillmail(Base):
    """Which tracked corporation's list held which killmail (a kill or a loss)."""

    __tablename__ = "corporation_killmails"

    corporation_id: Mapped[int] = mapped_column(
        ForeignKey("corporations.corporation_id", ondelete="CASCADE"), primary_key=True
    )
    killmail_id: Mapped[int] = mapped_column(primary_key=True, index=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class CorporationDirector(Base):
    """A character whose token carries the corporation scopes, and whether it can read its
    corporation's list (one row a character; ``last_used_at`` orders directors LRU)."""

    __tablename__ = "corporation_directors"

    character_id: Mapped[int] = mapped_column(
        ForeignKey("characters.character_id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    corporation_id: Mapped[int | None] = mapped_column(index=True)
    status: Mapped[DirectorStatus] = mapped_column(
        StrEnumText(DirectorStatus, 30), default=DirectorStatus.UNCHECKED
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    roles_checked_at: Mapped[datetime | None]
    roles_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    last_used_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class PendingKillmail(Base):
    """A listed killmail whose body could not be fetched yet; retried with backoff."""

    __tablename__ = "pending_killmails"

    killmail_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    killmail_hash: Mapped[str] = mapped_column(String(64))
    # Whose list it came from: a character's, or (character null) a corporation's.
    character_id: Mapped[int | None] = mapped_column(index=True)
    corporation_id: Mapped[int | None] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)


class Name(Base):
    """Names cache for /universe/names (characters, corporations, types, systems...)."""

    __tablename__ = "names"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(40))
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set for ids ESI could not resolve: ask again only after this time.
    retry_after: Mapped[datetime | None]


class SyncRun(Base):
    """One sync of one character's list (or, character null, one corporation's), with its
    figures."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    character_id: Mapped[int | None] = mapped_column(index=True)
    corporation_id: Mapped[int | None] = mapped_column(index=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20))
    figures: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """The database job queue (the embedded default broker)."""

    __tablename__ = "jobs"
    __table_args__ = (
        # One job per list and queue: queued, delayed or running (a row names a character
        # or, character null, a corporation; NULLs never collide).
        UniqueConstraint("queue", "character_id"),
        UniqueConstraint("queue", "corporation_id"),
        # The claim's order, in full (no sort of the ready jobs on every claim).
        Index("ix_jobs_ready", "queue", desc("priority"), "available_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    queue: Mapped[str] = mapped_column(String(200))
    character_id: Mapped[int | None] = mapped_column(index=True)
    corporation_id: Mapped[int | None]
    payload: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime]
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    queue: Mapped[str] = mapped_column(String(200))
    character_id: Mapped[int | None]
    payload: Mapped[dict[str, Any] | None]
    raw: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """Named leases across processes and hosts (a character's sync, the queue run)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class Event(Base):
    """The events outbox (embedded default): `killmail.saved` and friends."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Set once the event went out to the broker's fanout exchange (fleet deployments).
    published_at: Mapped[datetime | None]


class Webhook(Base):
    """A Discord or Slack webhook that receives fresh `killmail.saved` events."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    url_enc: Mapped[str] = mapped_column(Text)  # webhook URLs carry a secret: encrypted
    character_id: Mapped[int | None]
    # The tracked corporation whose kills and losses it posts (instead of a character's).
    corporation_id: Mapped[int | None]
    max_age_s: Mapped[int] = mapped_column(Integer, default=3600)
    # Opsec: a kill is posted only once it is this old (the outbox holds it until then).
    delay_s: Mapped[int] = mapped_column(Integer, default=0)
    # The filters of `killcli.events.filters`, as {kind: setting}; null: none.
    filters: Mapped[dict[str, Any] | None]
    cursor_event_id: Mapped[int] = mapped_column(default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    blocked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerStatus(Base):
    """What each running worker last saw of ESI, for `killsync stats` (one row a worker)."""

    __tablename__ = "worker_status"

    worker_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(index=True)
    jobs_handled: Mapped[int] = mapped_column(Integer, default=0)
    esi: Mapped[dict[str, Any] | None]


class EgressBudget(Base):
    """One shared ESI budget of one egress: a per-IP bucket, or the error limit.

    The row is the lock that serialises every block taken from the budget (see
    :mod:`killcli.esi.ledger`). Times are epoch seconds (wall clock of the writer).
    """

    __tablename__ = "egress_budgets"

    egress: Mapped[str] = mapped_column(String(100), primary_key=True)
    budget: Mapped[str] = mapped_column(String(100), primary_key=True)
    limit_tokens: Mapped[int | None] = mapped_column(Integer)
    window_s: Mapped[float | None] = mapped_column(Double)
    blocked_until: Mapped[float] = mapped_column(Double, default=0.0)
    updated_at: Mapped[float] = mapped_column(Double, default=0.0)


class EgressBlock(Base):
    """Tokens one process took from a shared bucket; they count until ``expires_at``."""

    __tablename__ = "egress_blocks"
    __table_args__ = (
        Index("ix_egress_blocks_egress_budget_expires_at", "egress", "budget", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    egress: Mapped[str] = mapped_column(String(100))
    budget: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(200))
    taken_at: Mapped[float] = mapped_column(Double)
    tokens: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Double)


class BodyClaim(Base):
    """A sync fetching a killmail body now; other workers wait for it instead of fetching
    it too (:mod:`killcli.sync.claims`). Deleted when the body is saved or pending."""

    __tablename__ = "body_claims"

    killmail_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    expires_at: Mapped[datetime]


class BodyWant(Base):
    """A body a sync will fetch later, when its egress's budget allows: a worker leaving
    through another egress, with budget to spare, may claim and fetch it first
    (:mod:`killcli.sync.helping`). Deleted when the body is saved or the sync ends; lapses
    with its sync's heartbeat."""

    __tablename__ = "body_wants"

    killmail_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    killmail_hash: Mapped[str] = mapped_column(String(64))
    # Whose list it came from: a character's, or (character null) a corporation's.
    character_id: Mapped[int | None]
    corporation_id: Mapped[int | None]
    owner: Mapped[str] = mapped_column(String(200), index=True)  # the claims' owner of the sync
    egress: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


# -- prices, the universe around killmails, values -------------------------------------------


class MarketHistory(Base):
    """One day of one type's market in one region (ESI's market history, EVE Ref's
    archives): the valuation reads ``average``."""

    __tablename__ = "market_history"
    # Keyed by day first: a daily archive's rows append instead of landing all over the
    # table. What readers need by type is in ``MarketHistoryType``.
    __table_args__ = (
        PrimaryKeyConstraint("region_id", "date", "type_id", name="pk_market_history"),
        {"sqlite_with_rowid": False},
    )

    region_id: Mapped[int] = mapped_column(autoincrement=False)
    type_id: Mapped[int] = mapped_column(autoincrement=False)
    date: Mapped[dt.date] = mapped_column(Date)
    average: Mapped[float] = mapped_column(Double)
    highest: Mapped[float] = mapped_column(Double)
    lowest: Mapped[float] = mapped_column(Double)
    volume: Mapped[int]
    order_count: Mapped[int]


class MarketHistoryType(Base):
    """How many days of one type's history a region has stored, and its first: what the
    valuation's walk back needs (``killcli.prices.store`` keeps it as it writes)."""

    __tablename__ = "market_history_types"

    region_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    type_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    days: Mapped[int]
    first_date: Mapped[dt.date] = mapped_column(Date)


class MarketHistoryPending(Base):
    """A day a bulk import added to the history whose rows ``market_history_types`` does
    not count yet (counted in one pass at the end of the import, or by the next reader)."""

    __tablename__ = "market_history_pending"

    region_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    date: Mapped[dt.date] = mapped_column(Date, primary_key=True)


class PriceImport(Base):
    """A market-history file `killsync prices import` stored (by the SHA-256 of its
    bytes): a re-run skips it, so an interrupted import resumes with the next file."""

    __tablename__ = "price_imports"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_name: Mapped[str] = mapped_column(Text)
    rows: Mapped[int]
    imported_at: Mapped[datetime]


class PriceChange(Base):
    """Prices that changed: the history of one type (``type_id``; null for every type,
    as a daily archive) from ``first_date`` on. `killsync values` recomputes the values
    priced on or after ``first_date`` and computed before ``changed_at``, then drops the
    changes it covered."""

    __tablename__ = "price_changes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    region_id: Mapped[int]
    type_id: Mapped[int | None]
    first_date: Mapped[dt.date] = mapped_column(Date)
    changed_at: Mapped[datetime] = mapped_column(index=True)


class PriceFetch(Base):
    """`killsync prices sync`'s progress: when a type's history was last fetched and when
    ESI refreshes it (its ``Expires``, 11:05 UTC); a type is asked again only after."""

    __tablename__ = "price_fetches"

    region_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    type_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    fetched_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    rows: Mapped[int] = mapped_column(Integer)


class MarketPrice(Base):
    """``GET /markets/prices``: the fallback price of types without history (values
    priced with it say so in their ``method``)."""

    __tablename__ = "market_prices"

    type_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    average_price: Mapped[float | None] = mapped_column(Double)
    adjusted_price: Mapped[float | None] = mapped_column(Double)
    fetched_at: Mapped[datetime]


class UniverseType(Base):
    """``GET /universe/types/{id}``, cached: a type's group (null with ``retry_after`` for
    ids ESI does not know)."""

    __tablename__ = "universe_types"

    type_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    group_id: Mapped[int | None]
    name: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    retry_after: Mapped[datetime | None]


class UniverseGroup(Base):
    """``GET /universe/groups/{id}``, cached: a group's category."""

    __tablename__ = "universe_groups"

    group_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    category_id: Mapped[int | None]
    name: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    retry_after: Mapped[datetime | None]


class UniverseSystem(Base):
    """``GET /universe/systems/{id}``, cached: a system's constellation and security."""

    __tablename__ = "universe_systems"

    system_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    constellation_id: Mapped[int | None]
    security_status: Mapped[float | None] = mapped_column(Double)
    name: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    retry_after: Mapped[datetime | None]


class UniverseConstellation(Base):
    """``GET /universe/constellations/{id}``, cached: a constellation's region."""

    __tablename__ = "universe_constellations"

    constellation_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    region_id: Mapped[int | None]
    name: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    retry_after: Mapped[datetime | None]


ISK = Numeric(20, 2)


class KillmailValue(Base):
    """The ISK value of a killmail, priced at its day (docs/valuation.md): totals rounded
    to 2 decimals, the price date, the method version, the types no price was found for."""

    __tablename__ = "killmail_values"

    killmail_id: Mapped[int] = mapped_column(
        ForeignKey("killmails.killmail_id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    total: Mapped[Decimal] = mapped_column(ISK)
    destroyed: Mapped[Decimal] = mapped_column(ISK)
    dropped: Mapped[Decimal] = mapped_column(ISK)
    fitted: Mapped[Decimal] = mapped_column(ISK)
    ship: Mapped[Decimal] = mapped_column(ISK)
    price_date: Mapped[dt.date] = mapped_column(Date, index=True)
    method: Mapped[str] = mapped_column(Text)
    unpriced_type_ids: Mapped[list[int]] = mapped_column(JSON)
    computed_at: Mapped[datetime]
