"""The valuation method (docs/valuation.md) on hand-computed cases.

Real bodies come from the shared folder (``tests/refdata.SHARED_KILLMAILS``, present in
CI; never copied into the project). Their expected values were computed by hand from the
bodies: with every type at 100.00 ISK a day and the hull at 1,000,000.00, a bucket is
1,000,000 (hull: destroyed, fitted) plus 100 per unit of the rows in it; a container's
contents count into its own bucket; fitted counts only top-level rows in fitted slots.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from killcli.killmail import parse_killmail
from killcli.universe import TypeInfo
from killcli.valuation import (
    FALLBACK_SUFFIX,
    METHOD,
    KillmailValuation,
    PriceBook,
    item_values,
    price_date,
    trimmed_average,
    value_killmail,
)
from tests.refdata import SHARED_KILLMAILS

HULL = 1_000_000.0
ITEM = 100.0


def flat_book(day: date, type_ids: set[int], hull: int, *, days: int = 40) -> PriceBook:
    """Every type at ``ITEM`` (the hull at ``HULL``) for ``days`` days up to ``day``."""
    history = {
        t: {day - timedelta(days=n): (HULL if t == hull else ITEM) for n in range(days)}
        for t in type_ids
    }
    return PriceBook(history=history)


def value_body(
    body: dict[str, Any], book: PriceBook, types: dict[int, TypeInfo] | None = None
) -> KillmailValuation:
    rows = parse_killmail(body)
    km = rows.killmail
    return value_killmail(
        km["killmail_id"],
        km["killmail_time"],
        km["victim_ship_type_id"],
        rows.items,
        book,
        types or {},
    )


def _types_in(body: dict[str, Any]) -> set[int]:
    found = {body["victim"]["ship_type_id"]}
    for item in body["victim"].get("items", []):
        found.add(item["item_type_id"])
        found.update(child["item_type_id"] for child in item.get("items", []))
    return found


# name -> (destroyed, dropped, fitted), hand-computed as the module docstring says
REAL = {
    # a Mobile Depot (destroyed) holding 10 destroyed modules: 141 + 11 destroyed units
    "killmail_119689329_nested_items.json": ("1015200.00", "11568600.00", "1002100.00"),
    "killmail_130734446_npc_faction_only_attacker.json": (
        "1001500.00",
        "13277700.00",
        "1003300.00",
    ),
    # an Astrahus: 1,020 destroyed units, 898 dropped, 9 in fitted slots
    "killmail_115787551_astrahus_structure_war_498_attackers.json": (
        "1102000.00",
        "89800.00",
        "1000900.00",
    ),
    # a Metenox: structure-only flags, none of them a fitted slot
    "killmail_131501165_metenox_moon_drill.json": ("7714000.00", "480100.00", "1000000.00"),
    # 91 EMP S loaded in a high slot (flag 27) are fitted: 101 fitted units
    "killmail_132461133_npc_corp_only_attacker.json": ("1001000.00", "97900.00", "1010100.00"),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_killmails_hand_computed(name: str) -> None:
    body = json.loads((SHARED_KILLMAILS / name).read_text(encoding="utf-8"))
    when = datetime.fromisoformat(body["killmail_time"].replace("Z", "+00:00"))
    hull = body["victim"]["ship_type_id"]
    value = value_body(body, flat_book(price_date(when), _types_in(body), hull))
    destroyed, dropped, fitted = (Decimal(v) for v in REAL[name])
    assert (value.destroyed, value.dropped, value.fitted) == (destroyed, dropped, fitted)
    assert value.total == destroyed + dropped
    assert value.ship == Decimal("1000000.00")
    assert value.unpriced_type_ids == ()
    assert value.method == METHOD


# -- the generated features: hand-built body ------------------------------------------------

CAPSULE, SKIN, BLUEPRINT, SHIP, MODULE, NO_PRICE, FALLBACK = 670, 44131, 691, 587, 2048, 9, 8
TYPES = {
    CAPSULE: TypeInfo(CAPSULE, "Capsule", 29, 6),
    SKIN: TypeInfo(SKIN, "Rifter SKIN", 1950, 91),
    BLUEPRINT: TypeInfo(BLUEPRINT, "Rifter Blueprint", 105, 9),
    SHIP: TypeInfo(SHIP, "Rifter", 25, 6),
    MODULE: TypeInfo(MODULE, "Damage Control II", 60, 7),
}


def _item(
    type_id: int, flag: int, *, destroyed: int = 0, dropped: int = 0, singleton: int = 0
) -> dict[str, Any]:
    row: dict[str, Any] = {"flag": flag, "item_type_id": type_id, "singleton": singleton}
    if destroyed:
        row["quantity_destroyed"] = destroyed
    if dropped:
        row["quantity_dropped"] = dropped
    return row


def _body(
    ship: int, items: list[dict[str, Any]], time: str = "2026-03-10T12:00:00Z"
) -> dict[str, Any]:
    return {
        "attackers": [
            {"character_id": 95000001, "corporation_id": 98000001, "damage_done": 10,
             "final_blow": True, "security_status": 0.0, "ship_type_id": 587}
        ],
        "killmail_id": 130000001,
        "killmail_time": time,
        "solar_system_id": 30000142,
        "victim": {"character_id": 95000002, "corporation_id": 98000002, "damage_taken": 10,
                   "ship_type_id": ship, "items": items},
    }  # fmt: skip


def test_capsule_hull_blueprint_copies_skins_hangar_ships_and_unpriced_types() -> None:
    hangar_ship = _item(SHIP, 90, destroyed=1, singleton=1)
    hangar_ship["items"] = [_item(MODULE, 11, destroyed=1), _item(MODULE, 19, dropped=2)]
    body = _body(
        CAPSULE,
        [
            _item(BLUEPRINT, 5, destroyed=3, singleton=2),  # copies: 0.01 each
            _item(BLUEPRINT, 5, dropped=1),  # an original: its market price
            _item(SKIN, 5, destroyed=1),  # 0.01
            hangar_ship,  # 100 + its fitting (100 + 2 x 100) into destroyed
            _item(NO_PRICE, 12, dropped=4),  # no price: 0.01 each, listed; a fitted slot
            _item(MODULE, 13, dropped=1),  # fitted, dropped
        ],
    )
    day = date(2026, 3, 10)
    priced = {BLUEPRINT, SKIN, SHIP, MODULE, CAPSULE}  # SKIN and capsule have history too
    value = value_body(body, flat_book(day, priced, hull=-1), TYPES)
    # destroyed: capsule 10,000 + 3 x 0.01 + 0.01 + (100 + 100 + 200) = 10,400.04
    assert value.destroyed == Decimal("10400.04")
    # dropped: blueprint original 100 + 4 x 0.01 + 100 = 200.04
    assert value.dropped == Decimal("200.04")
    assert value.total == Decimal("10600.08")
    # fitted: capsule 10,000 + unpriced 4 x 0.01 (slot 12) + module 100 (slot 13)
    assert value.fitted == Decimal("10100.04")
    assert value.ship == Decimal("10000.00")
    assert value.unpriced_type_ids == (NO_PRICE,)


def test_item_values_are_each_rows_share_of_the_total() -> None:
    hangar_ship = _item(SHIP, 90, destroyed=1, singleton=1)
    hangar_ship["items"] = [_item(MODULE, 11, destroyed=1), _item(MODULE, 19, dropped=2)]
    body = _body(
        CAPSULE,
        [
            _item(BLUEPRINT, 5, destroyed=3, singleton=2),
            hangar_ship,
            _item(NO_PRICE, 12, dropped=4),
        ],
    )
    day = date(2026, 3, 10)
    book = flat_book(day, {BLUEPRINT, SHIP, MODULE, CAPSULE}, hull=-1)
    rows = parse_killmail(body)
    values = item_values(rows.killmail["killmail_time"], rows.items, book, TYPES)
    by_type = {(r["item_type_id"], r["flag"]): values[r["position"]] for r in rows.items}
    assert by_type == {
        (BLUEPRINT, 5): Decimal("0.03"),  # three copies at 0.01
        (SHIP, 90): Decimal("100.00"),
        (MODULE, 11): Decimal("100.00"),  # inside the hangar ship: rows of their own
        (MODULE, 19): Decimal("200.00"),
        (NO_PRICE, 12): Decimal("0.04"),
    }
    total = value_body(body, book, TYPES)
    assert sum(values.values()) + total.ship == total.total


def test_the_fallback_price_is_used_and_flagged() -> None:
    body = _body(SHIP, [_item(FALLBACK, 5, destroyed=2)])
    book = flat_book(date(2026, 3, 10), {SHIP}, hull=-1)
    book.fallback[FALLBACK] = 1234.5
    value = value_body(body, book, TYPES)
    assert value.destroyed == Decimal("2569.00")  # 100 + 2 x 1,234.50
    assert value.method == METHOD + FALLBACK_SUFFIX
    assert value.unpriced_type_ids == ()


# -- the price date -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time", "day"),
    [
        ("2026-01-07T00:30:00", date(2026, 1, 6)),  # a kill at 00:30 uses the previous day
        ("2026-01-07T01:00:00", date(2026, 1, 6)),  # 3,601 s before is 23:59:59
        ("2026-01-07T01:00:01", date(2026, 1, 7)),
        ("2026-01-01T00:59:59", date(2025, 12, 31)),
    ],
)
def test_price_date_is_an_hour_and_a_second_before(time: str, day: date) -> None:
    assert price_date(datetime.fromisoformat(time).replace(tzinfo=UTC)) == day


def test_a_kill_after_midnight_is_priced_with_the_day_before() -> None:
    """Two days of prices, 100 then 300: a kill at 00:30 on the second day sees only 100."""
    day = date(2026, 1, 6)
    book = PriceBook(history={SHIP: {day: 100.0, day + timedelta(days=1): 300.0}})
    early = value_body(_body(SHIP, [], "2026-01-07T00:30:00Z"), book, TYPES)
    late = value_body(_body(SHIP, [], "2026-01-07T01:30:00Z"), book, TYPES)
    assert (early.price_date, early.ship) == (day, Decimal("100.00"))
    assert (late.price_date, late.ship) == (day + timedelta(days=1), Decimal("200.00"))


# -- the trimmed average ----------------------------------------------------------------


def _days(day: date, averages: list[float]) -> dict[date, float]:
    """``averages`` oldest first, the last one on ``day``."""
    return {day - timedelta(days=n): a for n, a in enumerate(reversed(averages))}


DAY = date(2026, 2, 1)


def test_all_34_days_drop_the_two_lowest_and_two_highest() -> None:
    history = _days(DAY, [float(n) for n in range(1, 41)])  # 1..40, 40 on the day
    # the 34 newest are 7..40; without 7, 8, 39, 40: the mean of 9..38 is 23.5
    assert trimmed_average(history, DAY, len(history)) == Decimal("23.50")


def test_more_than_six_days_drop_the_two_highest() -> None:
    history = _days(DAY, [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 1000.0, 80.0])
    # nine days: without 1000 and 80, the mean of 10..70 is 40; the day's own 80 > 40
    assert trimmed_average(history, DAY, len(history)) == Decimal("40.00")


def test_six_days_or_fewer_are_averaged_whole_and_capped_by_the_day() -> None:
    assert trimmed_average(_days(DAY, [10.0, 20.0, 33.0]), DAY, 3) == Decimal("21.00")
    # the day's own average (5) is lower than the mean (12.5): it wins
    assert trimmed_average(_days(DAY, [20.0, 5.0]), DAY, 2) == Decimal("5")


def test_rounding_is_half_away_from_zero() -> None:
    # (1.00 + 1.01) / 2 = 1.005 exactly: up to 1.01 (banker's rounding would give 1.00)
    assert trimmed_average(_days(DAY, [1.0, 1.01]), DAY, 2) == Decimal("1.01")
    assert trimmed_average(_days(DAY, [0.01, 0.02, 100.0]), DAY, 3) == Decimal("33.34")


def test_the_walk_back_covers_as_many_calendar_days_as_rows_are_stored() -> None:
    # Three rows, 10 days apart: from the newest, three calendar days reach only one.
    history = {DAY: 30.0, DAY - timedelta(days=10): 10.0, DAY - timedelta(days=20): 20.0}
    assert trimmed_average(history, DAY, len(history)) == Decimal("30.00")
    # With 25 rows stored (others later than DAY), the walk reaches all three.
    assert trimmed_average(history, DAY, 25) == Decimal("20.00")


def test_no_price_at_all_or_one_cent_is_none() -> None:
    assert trimmed_average({}, DAY, 0) is None
    assert trimmed_average(_days(DAY, [0.01, 0.01]), DAY, 2) is None
    assert trimmed_average({DAY - timedelta(days=5): 50.0}, DAY, 1) is None  # out of reach


def test_the_cap_applies_after_the_one_cent_check() -> None:
    # a mean of 20.005 -> 20.01 is a price; the day's own 0.01 then caps it (zKillboard's order)
    assert trimmed_average(_days(DAY, [40.0, 0.01]), DAY, 2) == Decimal("0.01")
