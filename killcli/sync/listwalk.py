"""A character's recent-killmails list, walked the way every sync walks it.

Page 1 is conditional on the ETag the caller holds: the engine passes
``Character.list_etag`` (a full sync passes none), the one home of list ETags; with no
ETag, no page is conditional. A page 1 fetched before the sync began (the worker's quick
path, :mod:`killcli.sync.quick`) is used instead of asking again, once: a restart reads page
1 afresh. Pages to ``X-Pages``, its bounds and restarts after a refresh mid-walk are
:func:`killcli.esi.pagination.walk_list`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from killcli.esi.client import EsiClient
from killcli.esi.models import ListPageResult
from killcli.esi.pagination import ListWalkResult, walk_list


@dataclass(frozen=True)
class CharacterListWalk:
    """The walk's rows and figures, and the last page 1 it read (whose ETag and expiry the
    engine stores once every body of the walk is settled)."""

    walk: ListWalkResult
    first: ListPageResult | None


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
) -> CharacterListWalk:
    """Walk ``character_id``'s list; ``on_page`` sees every page read (figures, progress)."""
    handed_over = [first_page] if first_page is not None else []
    first: list[ListPageResult] = []

    def fetch_page(page: int, *, conditional: bool = True) -> ListPageResult:
        if page == 1 and handed_over:
            result = handed_over.pop()
        else:
            result = esi.fetch_killmail_list_page(
                character_id,
                token,
                page,
                etag=etag if page == 1 else None,
                conditional=conditional and etag is not None,
            )
        if page == 1:
            first[:] = [result]
        if on_page is not None:
            on_page(result)
        return result

    walk = walk_list(
        fetch_page,
        stop_when=stop_when,
        max_restarts=max_restarts,
        label=f"character {character_id}'s list",
    )
    return CharacterListWalk(walk, first[0] if first else None)
