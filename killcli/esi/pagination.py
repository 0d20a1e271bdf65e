"""Walking an ``X-Pages`` list, and noticing when it refreshes under our feet.

All pages of a list share ``Last-Modified``. If a later page carries another one (or another
page count), ESI rebuilt the list between our requests and rows may have moved from one page
to the next: the walk must start over. :func:`iter_list_pages` raises
:class:`~killcli.esi.exceptions.ListRefreshed`; :func:`walk_list` restarts a bounded number
of times. A character's list is walked by :func:`killcli.sync.listwalk.walk_character_list`
(the sync engine's walk, page 1 conditional on the character's stored ETag).

The page size is not documented, so the end is ``X-Pages``, never a short page. A 304 page
carries no rows: it is unchanged since the walk that stored its ETag. An ``X-Pages`` outside
1..:data:`MAX_LIST_PAGES` is refused before the walk goes on (a bogus header from a proxy
must not send the walk after 10^20 pages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from killcli.errors import EsiError
from killcli.esi.exceptions import ListRefreshed
from killcli.esi.models import KillmailRef, ListPageResult

# The recent-killmails list covers 90 days; 10,000 pages (of 50 or more rows) is far more
# than any character receives. A larger X-Pages is a broken answer, not a busy character.
MAX_LIST_PAGES = 10_000


class FetchPage(Protocol):
    """Reads one page; ``conditional=False`` must send no ``If-None-Match``."""

    def __call__(self, page: int, *, conditional: bool) -> ListPageResult: ...


@dataclass(frozen=True)
class ListWalkResult:
    """The rows of one complete (or deliberately stopped) walk, duplicates removed."""

    items: tuple[KillmailRef, ...]
    pages: int
    pages_read: int
    not_modified: bool
    stopped_early: bool
    restarts: int


def _refreshed(first: ListPageResult, later: ListPageResult) -> bool:
    if first.last_modified and later.last_modified and first.last_modified != later.last_modified:
        return True
    both_fresh = first.status == 200 and later.status == 200
    return both_fresh and first.pages != later.pages


def check_page_count(page: ListPageResult, label: str) -> None:
    """Raise :class:`EsiError` unless ``X-Pages`` is 1..:data:`MAX_LIST_PAGES`."""
    if not 1 <= page.pages <= MAX_LIST_PAGES:
        shown = str(page.pages)
        if len(shown) > 24:
            shown = f"{shown[:20]}... ({len(shown)} digits)"
        raise EsiError(
            f"ESI sent X-Pages {shown} for {label}: expected 1..{MAX_LIST_PAGES}",
            hint="a broken answer from ESI or a proxy; try again later",
        )


def iter_list_pages(
    fetch_page: FetchPage, *, conditional: bool = True, label: str = "the killmail list"
) -> Iterator[ListPageResult]:
    """Yield pages 1..``X-Pages`` (only page 1 when it is a 304).

    Raises :class:`ListRefreshed` when a later page shows the list changed mid-walk, and
    :class:`EsiError` for an ``X-Pages`` out of range (see :func:`check_page_count`).
    """
    first = fetch_page(1, conditional=conditional)
    if not first.not_modified:
        check_page_count(first, label)
    yield first
    if first.not_modified:
        return
    for number in range(2, first.pages + 1):
        page = fetch_page(number, conditional=False)
        if _refreshed(first, page):
            raise ListRefreshed(label, number)
        yield page


def walk_list(
    fetch_page: FetchPage,
    *,
    stop_when: Callable[[ListPageResult], bool] | None = None,
    max_restarts: int = 2,
    conditional: bool = True,
    label: str = "the killmail list",
) -> ListWalkResult:
    """Read a list to its end, or until ``stop_when(page)`` is true for a page read.

    ``conditional=False`` reads page 1 in full even if its ETag is known (a full sync).

    On a refresh mid-walk the collected rows are dropped and the walk starts again, at most
    ``max_restarts`` times; then :class:`ListRefreshed` propagates. A restart reads page 1
    unconditionally: its stored ETag may be from the aborted walk, whose rows are gone.
    """
    for restart in range(max_restarts + 1):
        try:
            return _walk_once(
                fetch_page, stop_when, label, restart, conditional=conditional and restart == 0
            )
        except ListRefreshed:
            if restart == max_restarts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _walk_once(
    fetch_page: FetchPage,
    stop_when: Callable[[ListPageResult], bool] | None,
    label: str,
    restarts: int,
    *,
    conditional: bool,
) -> ListWalkResult:
    items: dict[KillmailRef, None] = {}  # a dict keeps first-seen order while de-duplicating
    pages_read, total, not_modified, stopped = 0, 1, False, False
    for page in iter_list_pages(fetch_page, conditional=conditional, label=label):
        pages_read += 1
        if page.page == 1:
            total, not_modified = page.pages, page.not_modified
        items.update(dict.fromkeys(page.items))
        if stop_when is not None and stop_when(page):
            stopped = page.page < total
            break
    return ListWalkResult(tuple(items), total, pages_read, not_modified, stopped, restarts)
