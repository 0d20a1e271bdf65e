"""A recent-killmails list, walked the way every sync walks it: a character's own list, or
a corporation's through its directors' tokens.

Page 1 is conditional on the ETag the caller holds: the engine passes the owner's
``list_etag`` (``Character.list_etag``, ``Corporation.list_etag``: the one home of list
ETags; a full sync passes none); with no ETag, no page is conditional. A page 1 fetched
before the sync began (the worker's quick path, :mod:`killcli.sync.quick`) is used instead
of asking again, once: a restart reads page 1 afresh. Pages to ``X-Pages``, its bounds and
restarts after a refresh mid-walk are :func:`killcli.esi.pagination.walk_list`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from killcli.esi.client import EsiClient
from killcli.esi.models import ListPageResult
from killcli.esi.pagination import ListWalkResult, walk_list


class PageFetcher(Protocol):
    """One page of a list; page 1 conditional on ``etag`` when ``conditional``."""

    def __call__(self, page: int, etag: str | None, *, conditional: bool) -> ListPageResult: ...


@runtime_checkable
class PacedPageFetcher(PageFetcher, Protocol):
    """A page fetcher that can tell how long its next page would wait for its bucket."""

    def ready_in_s(self) -> float:
        """Seconds until the next page may go (0: now; ``inf``: when answers in flight
        free the bucket). Reserves nothing."""
        ...


@dataclass(frozen=True)
class ListWalk:
    """The walk's rows and figures, and the last page 1 it read (whose ETag and expiry the
    engine stores once every body of the walk is settled)."""

    walk: ListWalkResult
    first: ListPageResult | None


def walk_killmail_list(
    fetch: PageFetcher,
    *,
    label: str,
    etag: str | None = None,
    first_page: ListPageResult | None = None,
    stop_when: Callable[[ListPageResult], bool] | None = None,
    on_page: Callable[[ListPageResult], None] | None = None,
    max_restarts: int = 2,
) -> ListWalk:
    """Walk one list through ``fetch``; ``on_page`` sees every page read (figures,
    progress)."""
    handed_over = [first_page] if first_page is not None else []
    first: list[ListPageResult] = []

    def fetch_page(page: int, *, conditional: bool = True) -> ListPageResult:
        if page == 1 and handed_over:
            result = handed_over.pop()
        else:
            result = fetch(
                page,
                etag if page == 1 else None,
                conditional=conditional and etag is not None,
            )
        if page == 1:
            first[:] = [result]
        if on_page is not None:
            on_page(result)
        return result

    walk = walk_list(fetch_page, stop_when=stop_when, max_restarts=max_restarts, label=label)
    return ListWalk(walk, first[0] if first else None)


def walk_character_list(
    esi: EsiClient,
    character_id: int,
    token: str,
    *,
    etag: str | None = None,
    first_page: ListPageResult | None = None,
    stop_when: Callable[[ListPageResult], bool] | None = None,
    on_page: Callable[[ListPageResult], None] | None = None,
    max_restarts: int = 2,
) -> ListWalk:
    """Walk ``character_id``'s own list with its token."""

    def fetch(page: int, etag: str | None, *, conditional: bool) -> ListPageResult:
        return esi.fetch_killmail_list_page(
            character_id, token, page, etag=etag, conditional=conditional
        )

    return walk_killmail_list(
        fetch,
        label=f"character {character_id}'s list",
        etag=etag,
        first_page=first_page,
        stop_when=stop_when,
        on_page=on_page,
        max_restarts=max_restarts,
    )
