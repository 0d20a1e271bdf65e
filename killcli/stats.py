"""What `killsync stats` reports, computed with a handful of indexed queries.

Counts of killmails use the primary-key index; "last hour/day" use the index on
``killmail_time``; the per-character table aggregates ``character_killmails`` and
``pending_killmails`` once each. Fast on millions of killmails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from killcli.db import Database
from killcli.db.models import (
    Character,
    CharacterKillmail,
    DeadLetter,
    Killmail,
    PendingKillmail,
    SyncRun,
)
from killcli.db.types import utcnow


@dataclass(frozen=True)
class CharacterStats:
    character_id: int
    name: str
    status: str
    last_sync_at: datetime | None
    killmails: int
    pending: int
    last_error: str | None


@dataclass(frozen=True)
class Stats:
    killmails_total: int
    killmails_last_hour: int
    killmails_last_day: int
    characters_by_status: dict[str, int]
    oldest_last_sync_at: datetime | None
    pending_total: int
    dead_letters: int
    last_run: dict[str, Any] | None
    characters: list[CharacterStats] = field(default_factory=list)
    queue: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_stats(db: Database, *, per_character_limit: int = 200) -> Stats:
    now = utcnow()
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Killmail)) or 0
        hour, day = (s.scalar(select(func.count()).select_from(Killmail).where(
            Killmail.killmail_time >= now - delta)) or 0
            for delta in (timedelta(hours=1), timedelta(days=1)))
        by_status = dict(s.execute(select(Character.status, func.count())
                                   .group_by(Character.status)).all())
        oldest = s.scalar(select(func.min(Character.last_sync_at))
                          .where(Character.status == "active"))
        pending_total = s.scalar(select(func.count()).select_from(PendingKillmail)) or 0
        dead = s.scalar(select(func.count()).select_from(DeadLetter)) or 0
        last = s.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(1)).first()
        killmails = dict(s.execute(select(CharacterKillmail.character_id, func.count())
                                   .group_by(CharacterKillmail.character_id)).all())
        pending = dict(s.execute(select(PendingKillmail.character_id, func.count())
                                 .group_by(PendingKillmail.character_id)).all())
        characters = [
            CharacterStats(c.character_id, c.name, c.status, c.last_sync_at,
                           killmails.get(c.character_id, 0), pending.get(c.character_id, 0),
                           c.last_error)
            for c in s.scalars(select(Character).order_by(Character.last_sync_at.desc())
                               .limit(per_character_limit))
        ]
    last_run = None if last is None else {
        "character_id": last.character_id, "status": last.status,
        "finished_at": last.finished_at, "figures": last.figures}
    return Stats(total, hour, day, by_status, oldest, pending_total, dead, last_run, characters)
