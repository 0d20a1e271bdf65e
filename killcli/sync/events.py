"""`killmail.saved` events, written to the outbox in the same transaction as the killmail.

The outbox makes an event exist exactly when its killmail does: `killsync watch` and the
webhooks read it on the embedded default, and on fleets a relay publishes it to the
``killsync.events`` fanout exchange and marks it published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from killcli.db.models import Event, table_of
from killcli.killmail import KillmailRows, format_time
from killcli.valuation import KillmailValuation

EVENTS = table_of(Event)
KILLMAIL_SAVED = "killmail.saved"
_PARTY_KEYS = ("character_id", "corporation_id", "alliance_id", "ship_type_id")


def _party(ids: Mapping[str, Any], names: Mapping[int, str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _PARTY_KEYS:
        value = ids.get(key)
        out[key] = value
        out[key.removesuffix("_id") + "_name"] = names.get(value) if value is not None else None
    return out


def killmail_saved_events(
    batch: Iterable[KillmailRows],
    names: Mapping[int, str | None],
    *,
    character_id: int | None = None,
    corporation_id: int | None = None,
    values: Mapping[int, KillmailValuation] | None = None,
) -> list[dict[str, Any]]:
    """One payload per new killmail: who died, who got the final blow, where and when,
    whose sync saved it (``character_id``, or ``corporation_id`` for a corporation's
    list: then ``character_id`` is null), and its ISK value (null when not valued yet:
    its prices are not stored)."""
    values = values or {}
    events = []
    for rows in batch:
        km = rows.killmail
        victim = {key: km[f"victim_{key}"] for key in _PARTY_KEYS}
        final = next((a for a in rows.attackers if a["final_blow"]), {})
        events.append(
            {
                "killmail_id": km["killmail_id"],
                "killmail_hash": km["killmail_hash"],
                "killmail_time": format_time(km["killmail_time"]),
                "character_id": character_id,
                "corporation_id": corporation_id,
                "solar_system_id": km["solar_system_id"],
                "solar_system_name": names.get(km["solar_system_id"]),
                "victim": _party(victim, names),
                "final_blow": _party(final, names),
                "attacker_count": km["attacker_count"],
                "value": (
                    values[km["killmail_id"]].as_dict() if km["killmail_id"] in values else None
                ),
            }
        )
    return events


def save_events(
    session: Session, payloads: Sequence[dict[str, Any]], event_type: str = KILLMAIL_SAVED
) -> None:
    """Append events to the outbox in the caller's transaction."""
    if payloads:
        session.execute(
            EVENTS.insert(), [{"event_type": event_type, "payload": p} for p in payloads]
        )
