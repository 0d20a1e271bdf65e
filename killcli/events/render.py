"""How a `killmail.saved` payload is shown: one text line, a Discord body, a Slack body.

Names come from players (``@everyone``, ``<@123>``, ``[b]Boss[/b]``, ``*x*``) and must never
ping, link or format anything: Discord text is backslash-escaped and sent with
``allowed_mentions: {"parse": []}``; Slack text has ``& < >`` escaped (the only characters
Slack parses for mentions and links) and is sent with ``mrkdwn: false``. Plain lines are
printed through a Rich console with markup off, so they need no escaping.

Names can also carry terminal and bidi controls (ESC, OSC, C1, BEL, CR, U+202E): every name
goes through :func:`killcli.textsafe.sanitize`, which replaces them visibly, so neither a
terminal (`killsync watch`) nor a chat message (webhooks) is driven or reordered by them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from killcli.events.outbox import OutboxEvent
from killcli.killmail import KillmailError, parse_time
from killcli.textsafe import sanitize

EVENT_JSON_VERSION = 1
ZKILLBOARD_URL = "https://zkillboard.com/kill/{killmail_id}/"
MAX_NAME_CHARS = 100  # EVE names are at most 37; anything longer is not a name
_DISCORD_SPECIAL = re.compile(r"([\\*_~`|>\[\]()<@#:\-])")


def killmail_time(payload: Mapping[str, Any]) -> datetime | None:
    """The killmail's time (UTC), None when missing or malformed."""
    try:
        return parse_time(payload.get("killmail_time"))
    except KillmailError:
        return None


def involves(payload: Mapping[str, Any], character_id: int) -> bool:
    """The event is about ``character_id``: its list held the kill, it died or got the
    final blow. (Other attackers are not in the payload.)"""
    parties = (payload, _party(payload, "victim"), _party(payload, "final_blow"))
    return any(p.get("character_id") == character_id for p in parties)


def _party(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, Mapping) else {}


def _clean(value: object) -> str:
    """A name on one line, of a sane length, its controls replaced visibly (no markup
    escaping: see the callers)."""
    return sanitize(str(value).strip()[:MAX_NAME_CHARS])


def party_name(party: Mapping[str, Any]) -> str:
    """Character, else corporation (structures, NPCs), else alliance, else the id."""
    for key in ("character", "corporation", "alliance"):
        if party.get(f"{key}_name"):
            return _clean(party[f"{key}_name"])
    for key in ("character_id", "corporation_id", "alliance_id"):
        if party.get(key) is not None:
            return f"#{party[key]}"
    return "unknown"


def ship_name(party: Mapping[str, Any]) -> str:
    if party.get("ship_type_name"):
        return _clean(party["ship_type_name"])
    type_id = party.get("ship_type_id")
    return "unknown ship" if type_id is None else f"type {type_id}"


def system_name(payload: Mapping[str, Any]) -> str:
    if payload.get("solar_system_name"):
        return _clean(payload["solar_system_name"])
    return f"system {payload.get('solar_system_id', '?')}"


def _when(payload: Mapping[str, Any]) -> str:
    when = killmail_time(payload)
    return "????-??-?? ??:??:??" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def amount(raw: object) -> Decimal | None:
    """An ISK amount as a value's dict writes it (a string with 2 decimals); None when
    missing or unreadable."""
    if raw is None:
        return None
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def value_total(value: object) -> Decimal | None:
    """The ``total`` of a stored value's dict (``KillmailValuation.as_dict``); None when
    not valued."""
    return amount(value.get("total")) if isinstance(value, Mapping) else None


def isk_value(payload: Mapping[str, Any]) -> str | None:
    """``1,234,567.89 ISK`` from the payload's ``value.total``; None when not valued."""
    total = value_total(payload.get("value"))
    return None if total is None else f"{total:,.2f} ISK"


ISK_UNITS = ((Decimal(10) ** 12, "t"), (Decimal(10) ** 9, "b"), (Decimal(10) ** 6, "m"))


def isk_compact(total: Decimal) -> str:
    """As killboards write it: ``1.23b``, ``45.60m``, ``780,000.00``."""
    for size, unit in ISK_UNITS:
        if abs(total) >= size:
            return f"{total / size:,.2f}{unit}"
    return f"{total:,.2f}"


def kill_line(payload: Mapping[str, Any]) -> str:
    """``2026-01-02 12:34:56  Victim (Ship) killed by Final (Ship) in Jita  killmail 1``."""
    victim, final = _party(payload, "victim"), _party(payload, "final_blow")
    return (
        f"{_when(payload)}  {party_name(victim)} ({ship_name(victim)}) killed by "
        f"{party_name(final)} ({ship_name(final)}) in {system_name(payload)}  "
        f"killmail {payload.get('killmail_id', '?')}"
    )


def event_json(event: OutboxEvent) -> dict[str, Any]:
    """The ``watch --json`` line: the broker message's shape plus a format version."""
    return {
        "version": EVENT_JSON_VERSION,
        "type": event.event_type,
        "id": event.id,
        "payload": event.payload,
    }


# -- Discord -----------------------------------------------------------------------------


def escape_discord(text: str) -> str:
    """Backslash-escape every character Discord markdown or mentions could use."""
    return _DISCORD_SPECIAL.sub(r"\\\1", text)


def discord_body(payload: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """``{"content", "embeds", "allowed_mentions"}`` for a Discord webhook."""
    victim, final = _party(payload, "victim"), _party(payload, "final_blow")
    esc = escape_discord
    content = (
        f"{esc(party_name(victim))} lost a {esc(ship_name(victim))} to "
        f"{esc(party_name(final))} in {esc(system_name(payload))}"
    )
    fields = [
        {
            "name": "Victim",
            "value": f"{esc(party_name(victim))} ({esc(ship_name(victim))})",
            "inline": True,
        },
        {
            "name": "Final blow",
            "value": f"{esc(party_name(final))} ({esc(ship_name(final))})",
            "inline": True,
        },
        {"name": "System", "value": esc(system_name(payload)), "inline": True},
        {"name": "Attackers", "value": str(payload.get("attacker_count", "?")), "inline": True},
    ]
    if (isk := isk_value(payload)) is not None:
        fields.append({"name": "Value", "value": esc(isk), "inline": True})
    embed: dict[str, Any] = {"title": "Killmail", "fields": fields}
    if isinstance(payload.get("killmail_id"), int):
        embed["title"] = f"Killmail {payload['killmail_id']}"
        embed["url"] = ZKILLBOARD_URL.format(killmail_id=payload["killmail_id"])
    when = killmail_time(payload)
    if when is not None:
        embed["timestamp"] = when.isoformat()
    return {"content": esc(prefix) + content, "embeds": [embed], "allowed_mentions": {"parse": []}}


# -- Slack -------------------------------------------------------------------------------


def escape_slack(text: str) -> str:
    """Slack's three control characters as entities: no mention or link can form."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(payload: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """``{"text", "mrkdwn": false}`` for a Slack incoming webhook."""
    line = kill_line(payload)
    if (isk := isk_value(payload)) is not None:
        line += f"  {isk}"
    if isinstance(payload.get("killmail_id"), int):
        line += "  " + ZKILLBOARD_URL.format(killmail_id=payload["killmail_id"])
    return {"text": escape_slack(prefix + line), "mrkdwn": False}


def webhook_body(kind: str, payload: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """The body for a webhook of ``kind`` (``discord`` or ``slack``)."""
    return (
        discord_body(payload, prefix=prefix)
        if kind == "discord"
        else slack_body(payload, prefix=prefix)
    )
