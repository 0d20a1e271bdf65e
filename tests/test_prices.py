"""The price store, `prices import`, `prices sync` and `killsync values` on SQLite and
PostgreSQL, against the simulator's market (its archives, and its ESI over real HTTP)."""

from __future__ import annotations

import bz2
import dataclasses
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from itertools import product
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from killcli.db import Database
from killcli.db.models import Base, KillmailValue, MarketHistory, PriceChange, PriceFetch, table_of
from killcli.db.store import save_killmails
from killcli.esi import EsiClient
from killcli.killmail import parse_killmail
from killcli.prices import importer
from killcli.prices.importer import import_price_files, imported_files, read_files
from killcli.prices.store import PENDING, save_history, settle_day_counts, stored_day_counts
from killcli.prices.sync import WindowPacer, needed_types, sync_prices
from killcli.universe import fetch_systems, fetch_types, get_types
from killcli.valuation import (
    CENT,
    METHOD,
    KillmailValuation,
    PriceBook,
    price_date,
    value_killmail,
)
from killcli.values import StoredPrices, compute_values, get_values, save_values
from killsim import Scenario, SimServer
from killsim.market import THE_FORGE, Market, write_history_archives

HISTORY = table_of(MarketHistory)
VALUES = table_of(KillmailValue)


@pytest.fixture(scope="module")
def market_sim() -> Iterator[SimServer]:
    """The market scenario (BPCs, SKINs, hangar ships, capsules, structures), served."""
    scenario = dataclasses.replace(Scenario.named("market", seed=5), killmails=80)
    with SimServer(scenario, port=0) as sim:
        yield sim


def _archives(sim: SimServer, directory: Path, *, pad_days: int = 40) -> list[Path]:
    """EVE Ref-style daily files covering every killmail's price date (and the 34 before)."""
    days = sorted({price_date(_when(sim.world.body(k))) for k in sim.world.killmails})
    first, last = days[0] - timedelta(days=pad_days), days[-1]
    span = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    market = Market(sim.world.item_types())
    return write_history_archives(directory, market, span, compress_level=1)


def _when(body: dict[str, Any]) -> Any:
    return parse_killmail(body).killmail["killmail_time"]


def _store_world(db: Database, sim: SimServer) -> list[int]:
    rows = [parse_killmail(sim.world.body(k)) for k in sorted(sim.world.killmails)]
    with db.session() as session:
        save_killmails(session, rows)
    return [r.killmail_id for r in rows]


def _client(sim: SimServer) -> EsiClient:
    return EsiClient(sim.esi_url, user_agent="killsync-tests (tests@killsync.invalid)")


def _history(db: Database) -> list[tuple[Any, ...]]:
    with db.session() as session:
        query = select(HISTORY).order_by(HISTORY.c.type_id, HISTORY.c.date)
        return [tuple(row) for row in session.execute(query)]


# -- import ------------------------------------------------------------------------------


def test_import_is_idempotent_and_skips_files_already_stored(
    db: Database, market_sim: SimServer, tmp_path: Path
) -> None:
    files = _archives(market_sim, tmp_path / "archives", pad_days=5)
    first = import_price_files(db, [tmp_path / "archives"], THE_FORGE)
    market = Market(market_sim.world.item_types())
    assert first.files == len(files) and first.failed_files == first.rejected_rows == 0
    assert first.rows == len(files) * len(market.traded_type_ids())
    stored = _history(db)
    again = import_price_files(db, [tmp_path / "archives"], THE_FORGE)
    assert (again.files, again.skipped_files, again.rows) == (0, len(files), 0)
    forced = import_price_files(db, files[:3], THE_FORGE, force=True)
    assert forced.files == 3 and _history(db) == stored
    # every row is the simulator's own day for that type
    region, type_id, day, average, *_ = stored[0]
    assert (region, average) == (THE_FORGE, market.row(THE_FORGE, type_id, day).average)


def test_an_interrupted_import_resumes_with_the_file_it_was_in(
    db: Database, market_sim: SimServer, tmp_path: Path
) -> None:
    files = _archives(market_sim, tmp_path / "a", pad_days=3)
    seen: list[Path] = []

    def stop_in_the_third(path: Path) -> None:
        seen.append(path)

    def stop(_rows: int) -> None:
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_price_files(db, [tmp_path / "a"], THE_FORGE, on_file=stop_in_the_third, on_rows=stop)
    assert imported_files(db) == sorted(p.name for p in files[:2])  # the third rolled back
    resumed = import_price_files(db, [tmp_path / "a"], THE_FORGE)
    assert (resumed.skipped_files, resumed.files) == (2, len(files) - 2)
    clean = Database(f"sqlite:///{tmp_path / 'clean.db'}")
    clean.upgrade()
    import_price_files(clean, [tmp_path / "a"], THE_FORGE)
    assert _history(db) == _history(clean)
    clean.close()


def test_bad_rows_are_skipped_with_their_line_and_columns_found_by_name(
    db: Database, tmp_path: Path
) -> None:
    # an older file layout (other column order, LF line ends), another region, bad rows
    lines = [
        "date,region_id,type_id,average,highest,lowest,volume,order_count",
        "2025-03-01,10000002,34,5.5,6,5,1000,10",
        "2025-02-30,10000002,35,5.5,6,5,1000,10",  # no such day
        "2025-03-01,10000002,36,cheap,6,5,1000,10",
        "2025-03-01,10000002,37,nan,6,5,1000,10",
        "2025-03-01,10000043,34,7.0,8,6,10,1",  # Domain: not the price region
        "2025-03-01,10000002,38",
        "2025-03-01,10000002,39,1.25,1.5,1,7,",  # an empty order count is 0
    ]
    path = tmp_path / "old-layout.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = import_price_files(db, [path], THE_FORGE)
    assert (result.rows, result.rejected_rows, result.other_regions) == (2, 4, 1)
    assert result.errors == [
        f"{path}:3: date: not a date (YYYY-MM-DD): '2025-02-30'",
        f"{path}:4: average: not a number: 'cheap'",
        f"{path}:5: average: price out of range: 'nan'",
        f"{path}:7: too few columns",
    ]
    assert [(r[1], r[3], r[7]) for r in _history(db)] == [(34, 5.5, 10), (39, 1.25, 0)]


def _recounted(db: Database) -> dict[int, tuple[int, date]]:
    """Each type's stored days and first day, counted from the history itself."""
    query = (
        select(HISTORY.c.type_id, func.count(), func.min(HISTORY.c.date))
        .where(HISTORY.c.region_id == THE_FORGE)
        .group_by(HISTORY.c.type_id)
    )
    with db.session() as session:
        return {t: (n, d) for t, n, d in session.execute(query)}


def _counts(db: Database) -> dict[int, tuple[int, date]]:
    with db.session() as session:
        return stored_day_counts(session, THE_FORGE)


def test_day_counts_stay_those_of_the_history_however_it_is_written(
    db: Database, tmp_path: Path
) -> None:
    market = Market(())
    span = [date(2025, 3, 1) + timedelta(days=n) for n in range(6)]
    files = write_history_archives(tmp_path, market, span, type_ids=range(1, 1201))
    import_price_files(db, files[2:4], THE_FORGE)  # bulk days: counted after the import
    assert _counts(db) == _recounted(db) and len(_recounted(db)) == 1200
    # one type over stored and new days (as `prices sync`), and a day counted later
    rows = [market.row(THE_FORGE, 7, d) for d in span[1:5]]
    with db.session() as session:
        save_history(session, [(THE_FORGE, 7, r.day.isoformat(), r.average, r.highest,
                                r.lowest, r.volume, r.order_count) for r in rows])  # fmt: skip
        session.execute(PENDING.insert(), [{"region_id": THE_FORGE, "date": span[5]}])
        save_history(session, [(THE_FORGE, 8, span[5].isoformat(), 1.0, 1.0, 1.0, 1, 1)])
    assert _counts(db) == _recounted(db)  # the pending day is counted by readers too
    import_price_files(db, files, THE_FORGE)  # days partly there, and new ones
    import_price_files(db, files[:3], THE_FORGE, force=True)  # again: nothing new
    assert _counts(db) == _recounted(db)
    assert _counts(db)[7] == (6, span[0]) and _counts(db)[1200] == (6, span[0])
    with db.session() as session:  # a row written around the store: `values` finds it
        session.execute(HISTORY.insert(), [{"region_id": THE_FORGE, "type_id": 7,
            "date": date(2025, 2, 1), "average": 1.0, "highest": 1.0, "lowest": 1.0,
            "volume": 1, "order_count": 1}])  # fmt: skip
        assert settle_day_counts(session, THE_FORGE)
        assert not settle_day_counts(session, THE_FORGE)
    assert _counts(db) == _recounted(db) and _counts(db)[7] == (7, date(2025, 2, 1))


def test_a_file_that_is_not_market_history_fails_alone(db: Database, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "market-history-2025-01-01.csv.bz2").write_bytes(b"BZh91AY&SYnot bzip")
    (tmp_path / "d" / "killmails.csv").write_text("killmail_id,hash\n1,ab\n", encoding="utf-8")
    good = tmp_path / "d" / "market-history-2025-01-02.csv"
    good.write_text(
        "average,date,highest,lowest,order_count,volume,http_last_modified,region_id,type_id\r\n"
        "10.0,2025-01-02,11.0,9.0,3,40,2025-01-03T11:05:00Z,10000002,34\r\n",
        encoding="utf-8",
    )
    result = import_price_files(db, [tmp_path / "d"], THE_FORGE)
    assert (result.files, result.failed_files, result.rows) == (1, 2, 1)
    assert any("no column region_id" in e for e in result.errors)
    assert any("not a readable market-history CSV" in e for e in result.errors)


def test_files_read_ahead_and_files_streamed_store_the_same_rows(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = Market(())
    span = [date(2025, 4, 1) + timedelta(days=n) for n in range(3)]
    files = write_history_archives(tmp_path / "a", market, span, type_ids=range(1, 1501))
    ahead = list(read_files(files, set()))
    assert all(r.digest and r.data and r.data.startswith(b"average,") for r in ahead)
    import_price_files(db, files[:1], THE_FORGE)  # read ahead (the usual road)
    monkeypatch.setattr(importer, "READ_AHEAD_BYTES", 1000)  # every file is streamed
    assert all(r.data is None for r in read_files(files, set()))
    streamed = import_price_files(db, files[1:], THE_FORGE)
    assert (streamed.files, streamed.rows, streamed.rejected_rows) == (2, 3000, 0)
    clean = Database(f"sqlite:///{tmp_path / 'clean.db'}")
    clean.upgrade()
    monkeypatch.setattr(importer, "READ_AHEAD_BYTES", 64 << 20)
    import_price_files(clean, files, THE_FORGE)
    assert _history(db) == _history(clean) and _counts(db) == _recounted(db)
    clean.close()
    # a file already stored is hashed, not decompressed again; one gone is reported
    stored = {r.digest for r in ahead[:1] if r.digest}
    again = list(read_files([files[0], tmp_path / "gone.csv.bz2"], stored))
    assert again[0].data is None and again[0].digest in stored
    assert again[1].digest is None and again[1].error and "cannot read" in again[1].error


# -- the universe cache --------------------------------------------------------------------


def test_types_groups_systems_and_regions_are_cached(db: Database, market_sim: SimServer) -> None:
    with _client(market_sim) as esi:
        types = fetch_types(db, esi, [670, 44131, 691, 587, 999_999_999])
        systems = fetch_systems(db, esi, [30000142, 30002756, 31_999_999])
    assert types[670].is_capsule and types[44131].is_skin and types[691].category_id == 9
    assert (types[587].group_id, types[587].category_id) == (25, 6)
    assert 999_999_999 not in types
    jita = systems[30000142]
    assert (jita.name, jita.region_id, jita.security_status) == ("Jita", THE_FORGE, 0.95)
    assert 31_999_999 not in systems
    with db.session() as session:  # the cache answers without ESI, unknown ids included
        assert get_types(session, [587])[587] == types[587]
    asked = market_sim.stats.snapshot().count("/universe/types/{type_id}")
    with _client(market_sim) as esi:  # ESI is not asked again, not even for the unknown id
        again = fetch_types(db, esi, [670, 999_999_999])
    assert again == {670: types[670]}
    assert market_sim.stats.snapshot().count("/universe/types/{type_id}") == asked


# -- prices sync against the simulator over HTTP ---------------------------------------------


def test_prices_sync_stays_under_the_per_minute_limit_and_resumes(
    db: Database, start_sim: Callable[..., SimServer]
) -> None:
    # The route's limit compressed to 12 requests per 2 s (500s beyond it, as CCP's 300/min).
    sim = start_sim("market", seed=5, killmails=40, market_history_limit=12,
                    market_history_window_s=2)  # fmt: skip
    _store_world(db, sim)
    with _client(sim) as esi:
        wanted = needed_types(db, None, sim.clock.now())
        done: list[int] = []

        def stop_after_five(count: int, _due: int) -> None:
            done.append(count)
            if count == 5:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            sync_prices(db, esi, THE_FORGE, per_minute=10, window_s=2, on_type=stop_after_five)
        result = sync_prices(db, esi, THE_FORGE, per_minute=10, window_s=2)
        again = sync_prices(db, esi, THE_FORGE, per_minute=10, window_s=2)
    limiter = sim.market_history_limiter
    assert limiter.refused == 0  # never a 500
    fixed = {670, 44131, 47513} & wanted  # capsules and SKINs are never asked for
    assert result.fetched + 5 == len(wanted - fixed) == limiter.answered
    assert result.paced_s > 0 and result.stopped is None
    assert again.fetched == 0 and again.fresh == len(wanted - fixed)
    assert result.market_prices == 0 and again.market_prices == 0  # fetched once, cached
    with db.session() as session:
        fetches = session.scalar(select(func.count()).select_from(table_of(PriceFetch)))
        expiry = session.scalar(select(func.min(table_of(PriceFetch).c.expires_at)))
    assert fetches == len(wanted - fixed)
    assert expiry is not None and (expiry.hour, expiry.minute) == (11, 5)


def test_the_window_pacer_never_sends_more_than_its_limit() -> None:
    from killcli.clock import ManualClock

    clock = ManualClock()
    pacer = WindowPacer(3, 60.0, clock)
    sent = []
    for _ in range(10):
        pacer.wait()
        sent.append(clock.monotonic())
    for index, moment in enumerate(sent):
        assert sum(1 for s in sent if moment <= s < moment + 60) <= 3, index
    assert sent[3] - sent[0] >= 60


# -- values ----------------------------------------------------------------------------------


def _priced_world(db: Database, sim: SimServer, archives: Path) -> list[int]:
    ids = _store_world(db, sim)
    import_price_files(db, [archives], THE_FORGE)
    with _client(sim) as esi:
        compute_values(db, THE_FORGE, esi=esi)
    return ids


def _all_values(db: Database) -> list[tuple[Any, ...]]:
    with db.session() as session:
        query = select(VALUES).order_by(VALUES.c.killmail_id)
        return [tuple(v for k, v in row.items() if k != "computed_at")
                for row in session.execute(query).mappings()]  # fmt: skip


@pytest.mark.postgres
def test_values_are_equal_on_sqlite_and_postgresql(
    market_sim: SimServer, tmp_path: Path, pg_url: str
) -> None:
    archives = tmp_path / "archives"
    _archives(market_sim, archives)
    sqlite = Database(f"sqlite:///{tmp_path / 'k.db'}")
    sqlite.upgrade()
    postgres = Database(pg_url)
    with postgres.engine.begin() as conn:  # the session's database: left by other tests
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    try:
        ids = _priced_world(sqlite, market_sim, archives)
        _priced_world(postgres, market_sim, archives)
        on_sqlite, on_postgres = _all_values(sqlite), _all_values(postgres)
    finally:
        sqlite.close()
        postgres.close()
    assert len(on_sqlite) == len(ids)
    assert on_sqlite == on_postgres


def test_generated_blueprint_copies_skins_and_hangar_ships(market_sim: SimServer) -> None:
    """Against the simulator's own prices: a blueprint copy or a SKIN adds 0.01 per unit
    to its bucket, a ship in the hangar adds its hull and its fitting, a capsule 10,000."""
    world = market_sim.world
    market = Market(world.item_types())
    from killcli.universe import TypeInfo
    from killsim.market import GROUPS

    types = {t.type_id: TypeInfo(t.type_id, t.name, t.group_id, GROUPS[t.group_id][1])
             for t in world.item_types()}  # fmt: skip
    last = max(price_date(_when(world.body(k))) for k in world.killmails)
    history = {
        t: {r.day: r.average for r in market.history(THE_FORGE, t, last)}
        for t in market.traded_type_ids()
    }
    book = PriceBook(history=history)
    seen = {"bpc": 0, "skin": 0, "hangar": 0, "capsule": 0}
    for killmail_id in sorted(world.killmails):
        body = world.body(killmail_id)
        rows = parse_killmail(body)
        km = rows.killmail

        def value(items: list[dict[str, Any]], km: dict[str, Any] = km) -> Any:
            return value_killmail(
                km["killmail_id"], km["killmail_time"], km["victim_ship_type_id"], items,
                book, types,
            )  # fmt: skip

        whole = value(rows.items)
        assert whole.total == whole.destroyed + whole.dropped and whole.method.startswith(METHOD)
        if km["victim_ship_type_id"] == 670:
            seen["capsule"] += 1
            assert whole.ship == 10_000
        for item in rows.items:
            if item["parent_position"] is not None:
                continue
            nested = [i for i in rows.items if i["parent_position"] == item["position"]]
            others = [i for i in rows.items if i is not item and i not in nested]
            without = value(others)
            bucket = "destroyed" if item["quantity_destroyed"] else "dropped"
            delta = getattr(whole, bucket) - getattr(without, bucket)
            units = (item["quantity_destroyed"] or 0) + (item["quantity_dropped"] or 0)
            if item["singleton"] == 2:
                seen["bpc"] += 1
                assert delta == CENT * units
            elif types[item["item_type_id"]].is_skin:
                seen["skin"] += 1
                assert delta == CENT * units
            elif item["flag"] == 90 and nested:
                seen["hangar"] += 1
                assert delta == sum(
                    (
                        (book.market_price(i["item_type_id"], whole.price_date) or CENT)
                        * ((i["quantity_destroyed"] or 0) + (i["quantity_dropped"] or 0))
                        for i in [item, *nested]
                    ),
                    Decimal(0),
                )
    assert all(seen.values()), seen


def test_values_recompute_only_what_changed(
    db: Database, market_sim: SimServer, tmp_path: Path
) -> None:
    archives = tmp_path / "archives"
    files = _archives(market_sim, archives)
    ids = _priced_world(db, market_sim, archives)
    with _client(market_sim) as esi:
        assert compute_values(db, THE_FORGE, esi=esi).valued == 0  # nothing changed
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(table_of(PriceChange))) == 0
        query = select(VALUES.c.killmail_id, VALUES.c.price_date)
        days = {row[0]: row[1] for row in session.execute(query)}
    # prices of one day change (a corrected archive): values priced from that day on
    day_file = files[len(files) // 2]
    day = date.fromisoformat(day_file.name.removeprefix("market-history-")[:10])
    text_rows = bz2.decompress(day_file.read_bytes()).decode().splitlines(keepends=True)
    doubled = [text_rows[0]] + [
        ",".join([str(float(r.split(",")[0]) * 2), *r.split(",")[1:]]) for r in text_rows[1:]
    ]
    day_file.write_bytes(bz2.compress("".join(doubled).encode()))
    import_price_files(db, [day_file], THE_FORGE)
    before = get_values_by_id(db, ids)
    result = compute_values(db, THE_FORGE)
    expected = {k for k, d in days.items() if d >= day}
    assert result.valued == len(expected) > 0
    after = get_values_by_id(db, ids)
    assert {k for k in ids if after[k] != before[k]} <= expected
    # a value of an older method version is recomputed, alone
    with db.session() as session:
        session.execute(update(VALUES).where(VALUES.c.killmail_id == ids[0]).values(method="zkb-0"))
    assert compute_values(db, THE_FORGE).valued == 1
    assert compute_values(db, THE_FORGE, recompute=True).valued == len(ids)


def get_values_by_id(db: Database, ids: list[int]) -> dict[int, Any]:
    with db.session() as session:
        return get_values(session, ids)


def test_a_sliding_window_values_as_a_window_per_chunk(
    db: Database, market_sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many types a chunk slide one window over the history (each row read about once):
    the values are the same as with each chunk's own window."""
    archives = tmp_path / "archives"
    _archives(market_sim, archives)
    _priced_world(db, market_sim, archives)
    per_chunk = _all_values(db)
    monkeypatch.setattr("killcli.values.SLIDE_AT_TYPES", 1)
    monkeypatch.setattr("killcli.values.CHUNK", 7)  # many chunks, the window moving on
    assert compute_values(db, THE_FORGE, recompute=True).valued == len(per_chunk)
    assert _all_values(db) == per_chunk


def test_a_sliding_window_prices_as_the_whole_history_sparse_types_too(db: Database) -> None:
    """The sliding window drops old days (keeping each type's last 34) and reads a type
    whole when a walk back reaches before the days held: every price is the one the
    whole history gives."""
    first = date(2024, 1, 1)
    dense = {first + timedelta(days=n): 100.0 + (n * 37 % 23) for n in range(400)}
    early = {first + timedelta(days=n): 60.0 + n % 7 for n in range(120)}  # then no more
    sparse = {first + timedelta(days=n): 50.0 + n for n in range(0, 400, 29)}
    rare = {first + timedelta(days=n): 7.0 + n % 5 for n in (0, 3, 250, 251, 300)}
    history = {1: dense, 2: early, 3: sparse, 4: rare}
    rows = [(THE_FORGE, t, d.isoformat(), a, a, a, 1, 1) for t, h in history.items()
            for d, a in h.items()]  # fmt: skip
    with db.session() as session:
        save_history(session, rows)
        spans = stored_day_counts(session, THE_FORGE)
    whole = PriceBook(history=history)
    book = StoredPrices(THE_FORGE, spans, {})
    priced = 0
    for chunk_start in range(200, 400, 9):  # chunks of 9 days, in time order
        days = [first + timedelta(days=chunk_start + n) for n in range(9)]
        with db.session() as session:
            book.load(session, [1, 2, 3, 4, *range(10, 2000)], days[0], days[-1])
            for day, type_id in product(days, history):
                price = book.market_price(type_id, day)
                assert price == whole.market_price(type_id, day), (type_id, day)
                priced += price is not None
    assert priced > 300 and 2 in book._complete  # the early type was read whole


def test_values_saved_twice_in_one_transaction_keep_the_last(
    db: Database, market_sim: SimServer
) -> None:
    """`save_values` replaces a stored value, also twice in one transaction (PostgreSQL
    COPYs them through a temporary table, emptied after each call)."""
    ids = _store_world(db, market_sim)[:3]
    day = date(2025, 5, 1)
    first = [KillmailValuation(k, Decimal("1.10"), Decimal("1.00"), Decimal("0.10"),
             Decimal("1.00"), Decimal("1.00"), day, METHOD, (34, 35)) for k in ids]  # fmt: skip
    again = [dataclasses.replace(v, total=Decimal("123456789012.34"), unpriced_type_ids=())
             for v in first[1:]]  # fmt: skip
    with db.session() as session:
        save_values(session, first)
        save_values(session, again)
    with db.session() as session:
        stored = get_values(session, ids)
    assert stored == {ids[0]: first[0], ids[1]: again[0], ids[2]: again[1]}
