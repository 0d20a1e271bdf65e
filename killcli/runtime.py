"""The long-lived objects of a process, built once from the settings and passed down.

One ESI client (and its rate limiter) and one sync engine (with its body-fetch threads) are
shared by every sync a process runs, so that concurrent syncs spend one budget and never
fetch a body twice. The limiter's per-IP buckets are also shared with every other process
of the same egress through the database's ledger (:mod:`killcli.esi.ledger`), and ESI and
SSO connections leave from ``KILLSYNC_SOURCE_ADDRESS`` when it is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from killcli.accounts import Accounts
from killcli.config import Settings
from killcli.corporations import Corporations
from killcli.db import Database
from killcli.errors import ConfigError
from killcli.esi import EsiClient, RateLimiter, user_agent
from killcli.esi.ledger import EgressLedger, egress_identity
from killcli.esi.ratelimit import WaitEvent
from killcli.esi.shared import SharedBudget
from killcli.holders import this_owner
from killcli.secrets import make_cipher
from killcli.sso.client import SsoClient
from killcli.sync import SyncEngine
from killcli.values import SaveTimeValuer

DEFAULT_BODY_CONCURRENCY = 16
DEFAULT_READ_TIMEOUT_S = 20.0


@dataclass
class Runtime:
    settings: Settings
    db: Database
    esi: EsiClient
    sso: SsoClient
    accounts: Accounts
    engine: SyncEngine
    corporations: Corporations
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.close()
            close_esi(self.esi)
            self.sso.close()


def make_sso(settings: Settings) -> SsoClient:
    if not settings.client_id:
        raise ConfigError(
            "KILLSYNC_CLIENT_ID is not set",
            hint="register an application at developers.eveonline.com",
        )
    return SsoClient(
        settings.sso_base_url,
        settings.client_id,
        settings.client_secret,
        user_agent=user_agent(settings.contact),
        local_address=settings.source_address,
    )


def make_accounts(settings: Settings, db: Database) -> Accounts:
    return Accounts(db, make_sso(settings), make_cipher(settings, db))


def make_shared_budget(
    settings: Settings, db: Database, *, max_block_tokens: int = 64
) -> SharedBudget:
    """This process's share of its egress's per-IP ESI budget (the database's ledger).

    A block is at most two requests per body thread (2 tokens each), so one lease serves
    a round of every thread.
    """
    egress = egress_identity(settings.egress, settings.source_address)
    return SharedBudget(EgressLedger(db, egress, this_owner()), max_block_tokens=max_block_tokens)


def build_runtime(
    settings: Settings,
    db: Database,
    *,
    body_concurrency: int = DEFAULT_BODY_CONCURRENCY,
    list_concurrency: int = 1,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    on_wait: Callable[[WaitEvent], None] | None = None,
) -> Runtime:
    """Everything a sync needs; close it when done. ``list_concurrency``: syncs at once
    (each may have a list request in flight beside the body threads')."""
    accounts = make_accounts(settings, db)
    esi = make_esi(
        settings,
        db,
        max_block_tokens=2 * 2 * body_concurrency,
        max_connections=max(8, body_concurrency * 2) + list_concurrency,
        read_timeout_s=read_timeout_s,
        on_wait=on_wait,
    )
    engine = SyncEngine(
        db,
        esi,
        accounts,
        body_threads=body_concurrency,
        egress=egress_identity(settings.egress, settings.source_address),
        valuer=SaveTimeValuer(settings.price_region_id),
    )
    corporations = Corporations(db, esi, accounts)
    return Runtime(settings, db, esi, accounts.sso, accounts, engine, corporations)


def make_esi(
    settings: Settings,
    db: Database,
    *,
    max_block_tokens: int = 64,
    max_connections: int = 8,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    on_wait: Callable[[WaitEvent], None] | None = None,
) -> EsiClient:
    """An ESI client whose limiter shares the egress's budget; close it (and its limiter)."""
    limiter = RateLimiter(
        on_wait=on_wait,
        shared=make_shared_budget(settings, db, max_block_tokens=max_block_tokens),
    )
    return EsiClient(
        settings.esi_base_url,
        user_agent=user_agent(settings.contact),
        limiter=limiter,
        max_connections=max_connections,
        read_timeout_s=read_timeout_s,
        local_address=settings.source_address,
    )


def close_esi(esi: EsiClient) -> None:
    """Hand unused shared tokens back to the egress, then close the connection pool."""
    if esi.limiter is not None:
        esi.limiter.close()
    esi.close()
