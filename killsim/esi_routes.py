"""ESI's data routes: what each answers, with its caching headers.

Limits, authentication and faults are applied around these by :mod:`killsim.esi`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.utils import format_datetime
from types import MappingProxyType
from typing import Any

from killsim.bodies import encode
from killsim.clock import Clock
from killsim.esi_format import esi_time
from killsim.lists import ListCache, ListVersion
from killsim.market import (
    CATEGORIES,
    GROUPS,
    REGION_IDS,
    Market,
    last_history_day,
    next_refresh,
    region_of_constellation,
)
from killsim.scenario import NOT_IN_CORPORATION, ROLE_ERRORS, RoleErrorMode
from killsim.world import World, is_npc_corporation

JSON = "application/json; charset=utf-8"
MAX_IDS = 1000
NAMES_404 = "Ensure all IDs are valid before resolving."
#: Cache ages (x-cache-age in the OpenAPI documents) of the routes served here.
CACHE_AGE_S = MappingProxyType(
    {
        "character": 86_400,
        "corporation": 3_600,
        "alliance": 3_600,
        "type": 86_400,
        "system": 86_400,
        "status": 30,
        "affiliation": 3_600,
        "names": 3_600,
        "roles": 3_600,
        "group": 86_400,
        "category": 86_400,
        "constellation": 86_400,
        "market_prices": 3_600,
    }
)
_LOCALISED = frozenset({"type", "system", "group", "category", "constellation"})
#: ``POST /characters/affiliation`` when none of the ids is a character (esi-issues#527).
NO_CHARACTERS = "No characters found!"


def http_date(value: datetime) -> str:
    """An HTTP date (``Sat, 28 Nov 2026 12:00:00 GMT``)."""
    return format_datetime(value, usegmt=True)


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:40] + '"'


def _error(status: int, message: str) -> tuple[int, bytes, dict[str, str]]:
    return status, encode({"error": message}), {"Content-Type": JSON}


Answer = tuple[int, bytes, dict[str, str]]


class EsiData:
    """The answers of the data routes (status, body, headers)."""

    def __init__(
        self,
        world: World,
        lists: ListCache,
        clock: Clock,
        body_cache_s: int,
        *,
        corporation_lists: ListCache | None = None,
        role_error: RoleErrorMode = "old",
    ) -> None:
        self._world = world
        self._lists = lists
        self._corp_lists = corporation_lists
        self._role_error = role_error
        self._refusals = itertools.count()
        self._refusals_lock = threading.Lock()
        self._clock = clock
        self._body_cache_s = body_cache_s
        self._started = clock.now().replace(microsecond=0)
        self.market = Market(world.item_types())

    def _ok(
        self,
        data: bytes,
        cache_s: int,
        *,
        private: bool = False,
        last_modified: datetime | None = None,
    ) -> Answer:
        now = self._clock.now().replace(microsecond=0)
        headers = {
            "Content-Type": JSON,
            "ETag": _etag(data),
            "Cache-Control": f"{'private' if private else 'public'}, max-age={cache_s}",
            "Expires": http_date(now + timedelta(seconds=cache_s)),
            "Last-Modified": http_date(last_modified or now),
        }
        return 200, data, headers

    # -- killmails -------------------------------------------------------------------------

    def recent(self, character_id: int, page_text: str | None) -> Answer:
        """``GET /characters/{id}/killmails/recent`` (authentication already checked)."""
        page = _page_number(page_text)
        if page < 1:
            return _error(400, "page must be an integer of at least 1")
        return self._list_page(self._lists.get(character_id), page)

    def corporation_recent(
        self, corporation_id: int, character_id: int | None, page_text: str | None
    ) -> Answer:
        """``GET /corporations/{id}/killmails/recent`` (token and scope already checked):
        403 unless the token's character is in the corporation (never for an NPC
        corporation: esi-issues#979) and has the Director role."""
        char = None if character_id is None else self._world.character(character_id)
        if (
            char is None
            or is_npc_corporation(corporation_id)
            or char.corporation_id != corporation_id
        ):
            return _error(403, NOT_IN_CORPORATION)
        if not self._world.roles(char.character_id).director:
            return _error(403, self._role_refusal())
        page = _page_number(page_text)
        if page < 1:
            return _error(400, "page must be an integer of at least 1")
        if self._corp_lists is None:  # pragma: no cover - the server always passes one
            return _error(404, "Not found")
        return self._list_page(self._corp_lists.get(corporation_id), page)

    def _role_refusal(self) -> str:
        if self._role_error != "alternate":
            return ROLE_ERRORS[self._role_error]
        with self._refusals_lock:
            count = next(self._refusals)
        return ROLE_ERRORS["new" if count % 2 else "old"]

    def roles(self, character_id: int) -> Answer:
        """``GET /characters/{id}/roles`` (token already checked for this character)."""
        payload = self._world.roles(character_id).to_json()
        return self._ok(encode(payload), CACHE_AGE_S["roles"], private=True)

    def _list_page(self, version: ListVersion, page: int) -> Answer:
        if page > version.pages:
            return _error(404, "Requested page does not exist!")
        data = encode(version.page(page))
        max_age_s = max(0, int((version.expires - self._clock.now()).total_seconds()))
        headers = {
            "Content-Type": JSON,
            "ETag": version.etag(page),
            "X-Pages": str(version.pages),
            "Cache-Control": f"private, max-age={max_age_s}",
            "Expires": http_date(version.expires),
            "Last-Modified": http_date(version.last_modified),
        }
        return 200, data, headers

    def killmail(self, killmail_id: int, killmail_hash: str) -> Answer:
        """``GET /killmails/{id}/{hash}``."""
        record = self._world.record(killmail_id)
        data = self._world.body_bytes(killmail_id)
        if record is None or data is None:
            return _error(404, "Killmail not found")
        if killmail_hash != record.killmail_hash:
            return _error(422, "Invalid killmail_id and/or killmail_hash")
        return self._ok(data, self._body_cache_s, last_modified=record.killmail_time)

    # -- bulk lookups ------------------------------------------------------------------------

    def _id_list(self, body: bytes) -> list[int] | Answer:
        try:
            ids = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            return _error(400, "Request body is not valid JSON")
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            return _error(400, "Request body must be a list of integer ids")
        if not ids or len(ids) > MAX_IDS:
            return _error(400, f"Request body must hold 1 to {MAX_IDS} ids, got {len(ids)}")
        if len(set(ids)) != len(ids):
            return _error(400, "Request body must not contain duplicate ids")
        return ids

    def names(self, body: bytes) -> Answer:
        """``POST /universe/names``: one unknown id fails the whole call with 404."""
        ids = self._id_list(body)
        if isinstance(ids, tuple):
            return ids
        rows: list[dict[str, Any]] = []
        for entity_id in ids:
            found = self._world.name(entity_id)
            if found is None:
                return _error(404, NAMES_404)
            rows.append({"category": found[1], "id": entity_id, "name": found[0]})
        return self._ok(encode(rows), CACHE_AGE_S["names"])

    def affiliation(self, body: bytes) -> Answer:
        """``POST /characters/affiliation``."""
        ids = self._id_list(body)
        if isinstance(ids, tuple):
            return ids
        rows: list[dict[str, Any]] = []
        for character_id in ids:
            char = self._world.character(character_id)
            if char is None:  # left out; the call fails only when none is a character
                continue
            row: dict[str, Any] = {
                "character_id": character_id,
                "corporation_id": char.corporation_id,
            }
            if char.alliance_id is not None:
                row["alliance_id"] = char.alliance_id
            if char.faction_id is not None:
                row["faction_id"] = char.faction_id
            rows.append(row)
        if not rows:
            return _error(404, NO_CHARACTERS)
        return self._ok(encode(rows), CACHE_AGE_S["affiliation"])

    # -- entities ------------------------------------------------------------------------------

    def entity(self, kind: str, entity_id: int) -> Answer:
        """``GET /characters|corporations|alliances|universe/types|universe/systems/{id}``."""
        payload = self._entity_payload(kind, entity_id)
        if payload is None:
            return _error(404, f"{kind.capitalize()} not found")
        status, data, headers = self._ok(encode(payload), CACHE_AGE_S[kind])
        if kind in _LOCALISED:  # localised routes say which language they answer in
            headers["Content-Language"] = "en"
        return status, data, headers

    def _entity_payload(self, kind: str, entity_id: int) -> Mapping[str, Any] | None:
        w = self._world
        if kind == "character":
            char = w.character(entity_id)
            return (
                None
                if char is None
                else _without_none(
                    {
                        "alliance_id": char.alliance_id,
                        "birthday": esi_time(char.birthday),
                        "bloodline_id": char.bloodline_id,
                        "corporation_id": char.corporation_id,
                        "description": "",
                        "faction_id": char.faction_id,
                        "gender": char.gender,
                        "name": char.name,
                        "race_id": char.race_id,
                        "security_status": char.security_status,
                    }
                )
            )
        if kind == "corporation":
            corp = w.corporation(entity_id)
            return (
                None
                if corp is None
                else _without_none(
                    {
                        "alliance_id": corp.alliance_id,
                        "ceo_id": corp.ceo_id,
                        "creator_id": corp.creator_id,
                        "description": "",
                        "date_founded": esi_time(corp.date_founded) if corp.date_founded else None,
                        "faction_id": corp.faction_id,
                        "member_count": corp.member_count,
                        "name": corp.name,
                        "tax_rate": corp.tax_rate,
                        "ticker": corp.ticker,
                        "url": "",
                    }
                )
            )
        if kind == "alliance":
            ally = w.alliance(entity_id)
            return (
                None
                if ally is None
                else {
                    "creator_corporation_id": ally.creator_corporation_id,
                    "creator_id": ally.creator_id,
                    "date_founded": esi_time(ally.date_founded),
                    "executor_corporation_id": ally.executor_corporation_id,
                    "name": ally.name,
                    "ticker": ally.ticker,
                }
            )
        return self._static_payload(kind, entity_id)

    def _static_payload(self, kind: str, entity_id: int) -> Mapping[str, Any] | None:
        if kind in ("group", "category", "constellation"):
            return self._grouping_payload(kind, entity_id)
        if kind == "type":
            info = self._world.item_type(entity_id)
            return (
                None
                if info is None
                else {
                    "description": f"{info.name} (simulated)",
                    "group_id": info.group_id,
                    "name": info.name,
                    "published": True,
                    "type_id": info.type_id,
                }
            )
        system = self._world.system(entity_id)
        if system is None:
            return None
        x, y, z = system.position
        return {
            "constellation_id": system.constellation_id,
            "name": system.name,
            "position": {"x": x, "y": y, "z": z},
            "security_status": system.security_status,
            "system_id": system.system_id,
        }

    def _grouping_payload(self, kind: str, entity_id: int) -> Mapping[str, Any] | None:
        """``/universe/groups|categories|constellations/{id}``, from the world's tables."""
        if kind == "group":
            if entity_id not in GROUPS:
                return None
            name, category_id = GROUPS[entity_id]
            types = sorted(t.type_id for t in self._world.item_types() if t.group_id == entity_id)
            return {
                "category_id": category_id,
                "group_id": entity_id,
                "name": name,
                "published": True,
                "types": types,
            }
        if kind == "category":
            if entity_id not in CATEGORIES:
                return None
            groups = sorted(g for g, (_, c) in GROUPS.items() if c == entity_id)
            return {
                "category_id": entity_id,
                "groups": groups,
                "name": CATEGORIES[entity_id],
                "published": True,
            }
        systems = sorted(
            s.system_id for s in self._world.systems() if s.constellation_id == entity_id
        )
        if not systems:
            return None
        return {
            "constellation_id": entity_id,
            "name": f"Constellation {entity_id - 20_000_000}",
            "position": {"x": 1.0e17, "y": -2.5e16, "z": 3.0e17},
            "region_id": region_of_constellation(entity_id),
            "systems": systems,
        }

    # -- the market ------------------------------------------------------------------------------

    def market_history(self, region_id: int, type_text: str | None) -> Answer:
        """``GET /markets/{region_id}/history?type_id=``: refreshed daily at 11:05 UTC."""
        if type_text is None or not type_text.isdigit():
            return _error(400, "type_id: must be an integer")
        if region_id not in REGION_IDS:
            return _error(400, "Invalid region_id: no market in this region")
        type_id = int(type_text)
        if self._world.item_type(type_id) is None:
            return _error(404, "Type not found!")
        now = self._clock.now().replace(microsecond=0)
        rows = self.market.history(region_id, type_id, last_history_day(now))
        expires = next_refresh(now)
        data = encode([r.to_json() for r in rows])
        headers = {
            "Content-Type": JSON,
            "ETag": _etag(data),
            "Cache-Control": f"public, max-age={int((expires - now).total_seconds())}",
            "Expires": http_date(expires),
            "Last-Modified": http_date(expires - timedelta(days=1)),
        }
        return 200, data, headers

    def market_prices(self) -> Answer:
        """``GET /markets/prices`` (cached an hour)."""
        rows = self.market.prices(last_history_day(self._clock.now()))
        return self._ok(encode(rows), CACHE_AGE_S["market_prices"])

    def status(self) -> Answer:
        """``GET /status``."""
        payload = {
            "players": 23_456,
            "server_version": "3001234",
            "start_time": esi_time(self._started),
        }
        return self._ok(encode(payload), CACHE_AGE_S["status"])


def _page_number(page_text: str | None) -> int:
    try:
        return int(page_text) if page_text is not None else 1
    except ValueError:
        return 0


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
