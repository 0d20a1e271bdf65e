"""Typed results of the ESI calls the sync engine makes, and their minimal validation.

Validation checks only what the caller relies on (types of IDs, a killmail's own ID) and
ignores unknown fields: ESI adds fields over time and a killmail body is stored as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from killcli.esi.exceptions import MalformedResponse


class KillmailRef(NamedTuple):
    """One row of a recent-killmails list."""

    killmail_id: int
    killmail_hash: str


@dataclass(frozen=True)
class EsiResponse:
    """A final (non-retried) ESI answer: 2xx with its decoded JSON, or a 304 without body."""

    status: int
    url: str
    body: Any
    group: str | None
    etag: str | None
    expires: datetime | None
    last_modified: datetime | None
    pages: int | None
    headers: Mapping[str, str] = field(repr=False)

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class ListPageResult:
    """One page of a recent-killmails list; ``items`` is empty on a 304."""

    status: int
    page: int
    pages: int
    items: tuple[KillmailRef, ...]
    etag: str | None
    expires: datetime | None
    last_modified: datetime | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class NameResult:
    """One entry of ``POST /universe/names``."""

    id: int
    name: str
    category: str


@dataclass(frozen=True)
class StatusResult:
    """``GET /status``: whether Tranquility is up and how busy it is."""

    players: int
    server_version: str
    start_time: datetime
    vip: bool


@dataclass(frozen=True)
class RolesResult:
    """``GET /characters/{id}/roles``: the character's corporation roles, and until when
    ESI's answer holds (``Expires``)."""

    roles: frozenset[str]
    roles_at_hq: frozenset[str]
    roles_at_base: frozenset[str]
    roles_at_other: frozenset[str]
    expires: datetime | None

    def has(self, role: str) -> bool:
        """Whether ``role`` is held corporation-wide (``roles``: Director is never local)."""
        return role in self.roles


@dataclass(frozen=True)
class AffiliationResult:
    """One entry of ``POST /characters/affiliation``: a character's current corporation."""

    character_id: int
    corporation_id: int
    alliance_id: int | None = None
    faction_id: int | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_killmail_refs(url: str, body: Any) -> tuple[KillmailRef, ...]:
    """A list page's JSON as refs; raise :class:`MalformedResponse` on a wrong shape."""
    if not isinstance(body, list):
        raise MalformedResponse(url, "expected a JSON array of killmail refs")
    refs = []
    for row in body:
        if not (
            isinstance(row, dict)
            and _is_int(row.get("killmail_id"))
            and isinstance(row.get("killmail_hash"), str)
        ):
            raise MalformedResponse(url, "a row lacks an integer killmail_id or a hash")
        refs.append(KillmailRef(row["killmail_id"], row["killmail_hash"]))
    return tuple(refs)


def check_killmail(url: str, body: Any, killmail_id: int) -> dict[str, Any]:
    """A killmail body, checked to be an object carrying the ID that was asked for."""
    if not isinstance(body, dict):
        raise MalformedResponse(url, "expected a JSON object")
    if body.get("killmail_id") != killmail_id or not _is_int(body.get("killmail_id")):
        raise MalformedResponse(url, f"killmail_id is not {killmail_id}")
    return body


def parse_names(url: str, body: Any) -> list[NameResult]:
    """``/universe/names`` rows; rows of an unexpected shape are a malformed answer."""
    if not isinstance(body, list):
        raise MalformedResponse(url, "expected a JSON array of names")
    names = []
    for row in body:
        if not (
            isinstance(row, dict)
            and _is_int(row.get("id"))
            and isinstance(row.get("name"), str)
            and isinstance(row.get("category"), str)
        ):
            raise MalformedResponse(url, "a name row lacks id, name or category")
        names.append(NameResult(row["id"], row["name"], row["category"]))
    return names


def parse_status(url: str, body: Any) -> StatusResult:
    """``/status`` body as a :class:`StatusResult`."""
    try:
        start = datetime.fromisoformat(str(body["start_time"]))
        return StatusResult(
            players=int(body["players"]),
            server_version=str(body["server_version"]),
            start_time=start if start.tzinfo else start.replace(tzinfo=UTC),
            vip=bool(body.get("vip", False)),
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise MalformedResponse(url, f"status body: {exc}") from exc


def parse_roles(url: str, body: Any, expires: datetime | None) -> RolesResult:
    """A roles body; each of its four lists is optional (an empty list may be left out)."""
    if not isinstance(body, dict):
        raise MalformedResponse(url, "expected a JSON object of roles")
    lists = []
    for key in ("roles", "roles_at_hq", "roles_at_base", "roles_at_other"):
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
            raise MalformedResponse(url, f"{key} is not a list of role names")
        lists.append(frozenset(value))
    roles, at_hq, at_base, at_other = lists
    return RolesResult(roles, at_hq, at_base, at_other, expires)


def parse_affiliations(url: str, body: Any) -> list[AffiliationResult]:
    """``/characters/affiliation`` rows; each needs an integer character and corporation."""
    if not isinstance(body, list):
        raise MalformedResponse(url, "expected a JSON array of affiliations")
    rows = []
    for row in body:
        if not (
            isinstance(row, dict)
            and _is_int(row.get("character_id"))
            and _is_int(row.get("corporation_id"))
        ):
            raise MalformedResponse(url, "an affiliation lacks character_id or corporation_id")
        alliance, faction = row.get("alliance_id"), row.get("faction_id")
        rows.append(
            AffiliationResult(
                row["character_id"],
                row["corporation_id"],
                alliance if _is_int(alliance) else None,
                faction if _is_int(faction) else None,
            )
        )
    return rows
