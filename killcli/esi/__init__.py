"""ESI access: the HTTP client, the header-driven rate limiter, retries, pagination.

Build one :class:`RateLimiter` and one :class:`EsiClient` per process and pass them down::

    limiter = RateLimiter(on_wait=lambda event: console.print(event.message))
    with EsiClient(settings.esi_base_url, user_agent=user_agent(settings.contact),
                   limiter=limiter) as esi:
        page = esi.fetch_killmail_list_page(character_id, access_token, 1, etag=stored_etag)

Errors (all ``killcli.errors.EsiError``)::

    EsiError
    ├── EsiHttpError        a 4xx we do not retry; ``.status`` (404 names, 422 bad hash)
    ├── EsiUnavailable      retries exhausted, error-limited, waited too long
    ├── MalformedResponse   a 2xx body of the wrong shape          (killcli.esi.exceptions)
    └── ListRefreshed       a list changed mid-walk, restarts used (killcli.esi.exceptions)
"""

from __future__ import annotations

from killcli.clock import Clock, ManualClock  # re-exported: the clock of the ESI layer
from killcli.esi.buckets import BucketKey, BucketSnapshot
from killcli.esi.client import (
    COMPATIBILITY_DATE,
    EsiClient,
    character_killmails_path,
    corporation_killmails_path,
    user_agent,
)
from killcli.esi.exceptions import ListRefreshed, MalformedResponse
from killcli.esi.models import (
    EsiResponse,
    KillmailRef,
    ListPageResult,
    NameResult,
    StatusResult,
)
from killcli.esi.names import NamesResult, fetch_names
from killcli.esi.pagination import (
    FetchPage,
    ListWalkResult,
    iter_list_pages,
    walk_list,
)
from killcli.esi.ratelimit import LimiterSnapshot, RateLimiter, WaitEvent
from killcli.esi.retry import RetryPolicy
from killcli.esi.stats import ClientStats, StatsSnapshot

__all__ = [
    "COMPATIBILITY_DATE",
    "BucketKey",
    "BucketSnapshot",
    "ClientStats",
    "Clock",
    "EsiClient",
    "EsiResponse",
    "FetchPage",
    "KillmailRef",
    "LimiterSnapshot",
    "ListPageResult",
    "ListRefreshed",
    "ListWalkResult",
    "MalformedResponse",
    "ManualClock",
    "NameResult",
    "NamesResult",
    "RateLimiter",
    "RetryPolicy",
    "StatsSnapshot",
    "StatusResult",
    "WaitEvent",
    "character_killmails_path",
    "corporation_killmails_path",
    "fetch_names",
    "iter_list_pages",
    "user_agent",
    "walk_list",
]
