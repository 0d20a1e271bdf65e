"""Walking X-Pages lists: to the last page, restarting when the list refreshes mid-walk.

A character's list is walked through the sync engine's own walk
(:func:`killcli.sync.listwalk.walk_character_list`), ETags as the engine passes them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from killcli.esi import (
    EsiClient,
    FetchPage,
    KillmailRef,
    ListPageResult,
    ListRefreshed,
    ListWalkResult,
    ManualClock,
    iter_list_pages,
    walk_list,
)
from killcli.sync.listwalk import ListWalk, walk_character_list
from tests.esi.esi_fakes import FakeEsi, hash_of

MODIFIED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def ids(refs: tuple[KillmailRef, ...]) -> list[int]:
    return [ref.killmail_id for ref in refs]


def fetcher(client: EsiClient, character_id: int = 7) -> FetchPage:
    def fetch(page: int, *, conditional: bool) -> ListPageResult:
        return client.fetch_killmail_list_page(character_id, "tok", page, conditional=conditional)

    return fetch


def walk_of(client: EsiClient, **options: object) -> ListWalk:
    return walk_character_list(client, 7, "tok", **options)  # type: ignore[arg-type]


def walk(client: EsiClient, **options: object) -> ListWalkResult:
    return walk_of(client, **options).walk


def test_walks_every_page_to_x_pages(client: EsiClient, fake: FakeEsi) -> None:
    fake.set_list(7, [7, 6, 5, 4, 3, 2, 1])
    result = walk(client)
    assert ids(result.items) == [7, 6, 5, 4, 3, 2, 1]
    assert (result.pages, result.pages_read, result.restarts) == (3, 3, 0)
    assert [seen.query["page"] for seen in fake.seen] == ["1", "2", "3"]


def test_a_short_page_is_not_the_end() -> None:
    pages = {1: (1, 2, 3), 2: (4,), 3: (5, 6, 7)}

    def fetch(page: int, *, conditional: bool) -> ListPageResult:
        refs = tuple(KillmailRef(i, hash_of(i)) for i in pages[page])
        return ListPageResult(200, page, 3, refs, '"e"', None, MODIFIED)

    assert ids(walk_list(fetch).items) == [1, 2, 3, 4, 5, 6, 7]


def refresh_once_on_page_2(fake: FakeEsi, clock: ManualClock, new_rows: list[int]) -> None:
    done: list[bool] = []

    def hook(character_id: int, page: int) -> None:
        if page == 2 and not done:
            done.append(True)
            clock.advance(5)  # the rebuilt list has a new Last-Modified
            fake.set_list(character_id, new_rows)

    fake.on_list_page = hook


def test_iter_list_pages_signals_a_refresh(
    client: EsiClient, fake: FakeEsi, clock: ManualClock
) -> None:
    fake.set_list(7, [6, 5, 4, 3, 2, 1])
    refresh_once_on_page_2(fake, clock, [7, 6, 5, 4, 3, 2, 1])
    pages = iter_list_pages(fetcher(client))
    assert ids(next(pages).items) == [6, 5, 4]
    with pytest.raises(ListRefreshed, match="page 2"):
        next(pages)


def test_new_kill_mid_walk_restarts_without_losing_or_repeating_rows(
    client: EsiClient, fake: FakeEsi, clock: ManualClock
) -> None:
    fake.set_list(7, [6, 5, 4, 3, 2, 1])
    refresh_once_on_page_2(fake, clock, [7, 6, 5, 4, 3, 2, 1])  # rows shift one place down
    result = walk(client)
    assert result.restarts == 1
    assert ids(result.items) == [7, 6, 5, 4, 3, 2, 1]
    assert [seen.query["page"] for seen in fake.seen] == ["1", "2", "1", "2", "3"]


def test_restart_reads_page_one_in_full_even_if_it_did_not_change(
    client: EsiClient, fake: FakeEsi, clock: ManualClock
) -> None:
    """Only the tail changed (a kill aged out): page 1 may match the ETag the walk was
    given, but a 304 would end the walk without the rows of the later pages."""
    fake.set_list(7, [6, 5, 4, 3, 2, 1])
    refresh_once_on_page_2(fake, clock, [6, 5, 4, 3, 2])
    result = walk(client, etag='"from-the-last-sync"')
    assert result.restarts == 1 and not result.not_modified
    assert ids(result.items) == [6, 5, 4, 3, 2]
    assert fake.seen[0].headers["if-none-match"] == '"from-the-last-sync"'
    assert "if-none-match" not in fake.seen[2].headers


def test_restarts_are_bounded(client: EsiClient, fake: FakeEsi, clock: ManualClock) -> None:
    fake.set_list(7, [6, 5, 4, 3, 2, 1])

    def always_refreshing(character_id: int, page: int) -> None:
        if page == 2:
            clock.advance(5)
            fake.set_list(character_id, [*fake.lists[character_id]])

    fake.on_list_page = always_refreshing
    with pytest.raises(ListRefreshed, match="refreshed while reading page 2"):
        walk(client, max_restarts=2)
    assert [seen.query["page"] for seen in fake.seen] == ["1", "2"] * 3


def test_stop_when_ends_the_walk_early(client: EsiClient, fake: FakeEsi) -> None:
    fake.set_list(7, [7, 6, 5, 4, 3, 2, 1])
    known = {2, 3, 4}
    result = walk(client, stop_when=lambda page: all(r.killmail_id in known for r in page.items))
    assert result.stopped_early and result.pages_read == 2
    assert ids(result.items) == [7, 6, 5, 4, 3, 2]


def test_304_on_page_one_ends_the_walk_and_later_pages_are_never_conditional(
    client: EsiClient, fake: FakeEsi
) -> None:
    fake.set_list(7, [7, 6, 5, 4, 3, 2, 1])
    first = walk_of(client)  # no ETag yet: nothing is conditional
    assert all("if-none-match" not in seen.headers for seen in fake.seen)
    assert first.first is not None and first.first.etag
    again = walk(client, etag=first.first.etag)  # as the engine passes Character.list_etag
    assert again.not_modified and again.items == () and again.pages_read == 1
    assert fake.seen[-1].headers["if-none-match"]


def test_a_page_one_fetched_before_the_walk_is_used_once(
    client: EsiClient, fake: FakeEsi, clock: ManualClock
) -> None:
    """The worker's quick path hands its page 1 over; a restart asks for page 1 again."""
    fake.set_list(7, [6, 5, 4, 3, 2, 1])
    page_one = client.fetch_killmail_list_page(7, "tok", 1)
    refresh_once_on_page_2(fake, clock, [7, 6, 5, 4, 3, 2, 1])
    read: list[int] = []
    result = walk_of(client, first_page=page_one, on_page=lambda page: read.append(page.page))
    assert [seen.query["page"] for seen in fake.seen] == ["1", "2", "1", "2", "3"]
    assert read == [1, 2, 1, 2, 3] and result.walk.restarts == 1
    assert ids(result.walk.items) == [7, 6, 5, 4, 3, 2, 1]
    assert result.first is not None and ids(result.first.items) == [7, 6, 5]
