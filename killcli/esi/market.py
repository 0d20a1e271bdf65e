"""The market and universe lookups the valuation needs, as typed calls on any client
with the generic ``request`` of :class:`~killcli.esi.client.EsiClient`.

* ``GET /markets/{region_id}/history?type_id=``: one type a call, refreshed daily at
  11:05 UTC (its ``Expires``), limited by CCP to about 300 requests a minute per IP
  (a 500 beyond it): :mod:`killcli.prices.sync` paces the calls;
* ``GET /markets/prices``: one call for every type, cached an hour;
* ``GET /universe/types|groups|systems|constellations/{id}``: the type -> group ->
  category and system -> constellation -> region chains (:mod:`killcli.universe`).

Each parser checks what its caller relies on and raises
:class:`~killcli.esi.exceptions.MalformedResponse` otherwise; unknown fields are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, TypeGuard

from killcli.esi.exceptions import MalformedResponse
from killcli.esi.models import EsiResponse


class Requester(Protocol):
    """What these calls need of a client (``EsiClient`` has it)."""

    def request(
        self, method: str, path: str, *, params: dict[str, str | int] | None = None
    ) -> EsiResponse: ...


@dataclass(frozen=True)
class HistoryDay:
    """One row of a type's market history."""

    day: date
    average: float
    highest: float
    lowest: float
    volume: int
    order_count: int


@dataclass(frozen=True)
class HistoryResult:
    """A type's history in a region and when ESI refreshes it."""

    region_id: int
    type_id: int
    days: tuple[HistoryDay, ...]
    expires: datetime | None


@dataclass(frozen=True)
class MarketPriceRow:
    """One row of ``/markets/prices`` (either price may be missing)."""

    type_id: int
    average_price: float | None
    adjusted_price: float | None


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def fetch_market_history(client: Requester, region_id: int, type_id: int) -> HistoryResult:
    """A type's daily history in a region (``[]`` for a type that never traded)."""
    response = client.request("GET", f"/markets/{region_id}/history", params={"type_id": type_id})
    return HistoryResult(
        region_id, type_id, parse_history(response.url, response.body), response.expires
    )


def parse_history(url: str, body: Any) -> tuple[HistoryDay, ...]:
    """The rows of a history answer."""
    if not isinstance(body, list):
        raise MalformedResponse(url, "expected a JSON array of history rows")
    days: list[HistoryDay] = []
    for row in body:
        if not (
            isinstance(row, dict)
            and all(_number(row.get(k)) for k in ("average", "highest", "lowest"))
            and _int(row.get("volume"))
            and _int(row.get("order_count"))
            and isinstance(row.get("date"), str)
        ):
            raise MalformedResponse(url, "a history row lacks a date, prices or counts")
        try:
            day = date.fromisoformat(row["date"])
        except ValueError as exc:
            raise MalformedResponse(url, "a history row's date is not YYYY-MM-DD") from exc
        days.append(
            HistoryDay(
                day,
                float(row["average"]),
                float(row["highest"]),
                float(row["lowest"]),
                row["volume"],
                row["order_count"],
            )
        )
    return tuple(days)


def fetch_market_prices(client: Requester) -> tuple[MarketPriceRow, ...]:
    """``GET /markets/prices``: every type's average and adjusted price (some missing)."""
    response = client.request("GET", "/markets/prices")
    if not isinstance(response.body, list):
        raise MalformedResponse(response.url, "expected a JSON array of prices")
    rows = []
    for row in response.body:
        if not isinstance(row, dict) or not _int(row.get("type_id")):
            raise MalformedResponse(response.url, "a price row lacks an integer type_id")
        average, adjusted = row.get("average_price"), row.get("adjusted_price")
        rows.append(
            MarketPriceRow(
                row["type_id"],
                float(average) if _number(average) else None,
                float(adjusted) if _number(adjusted) else None,
            )
        )
    return tuple(rows)


@dataclass(frozen=True)
class UniverseRecord:
    """What a universe lookup tells: the id, its name, and the id of its parent
    (a type's group, a group's category, a system's constellation, a constellation's
    region); systems also carry their security status."""

    id: int
    name: str | None
    parent_id: int
    security_status: float | None = None


#: route, the key of the id in the answer, the key of the parent id
UNIVERSE_ROUTES = {
    "type": ("/universe/types/{}", "type_id", "group_id"),
    "group": ("/universe/groups/{}", "group_id", "category_id"),
    "system": ("/universe/systems/{}", "system_id", "constellation_id"),
    "constellation": ("/universe/constellations/{}", "constellation_id", "region_id"),
}


def fetch_universe(client: Requester, kind: str, entity_id: int) -> UniverseRecord:
    """One ``/universe/...`` lookup (``kind`` a key of :data:`UNIVERSE_ROUTES`); an
    unknown id raises :class:`~killcli.errors.EsiHttpError` 404."""
    template, own_key, parent_key = UNIVERSE_ROUTES[kind]
    response = client.request("GET", template.format(entity_id))
    body = response.body
    if not isinstance(body, dict) or not _int(body.get(parent_key)):
        raise MalformedResponse(response.url, f"expected an object with an integer {parent_key}")
    name = body.get("name")
    security = body.get("security_status") if kind == "system" else None
    return UniverseRecord(
        entity_id if not _int(body.get(own_key)) else body[own_key],
        name if isinstance(name, str) else None,
        body[parent_key],
        float(security) if _number(security) else None,
    )
