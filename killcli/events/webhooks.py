"""Discord and Slack webhooks: configure them, and deliver fresh `killmail.saved` events.

Delivery (:func:`deliver_pending`, one round over every due webhook):

* each webhook follows the outbox with its own ``cursor_event_id``, starting at the newest
  event when it is added (adding one never replays history);
* only kills younger than ``max_age_s`` **by killmail time** are posted; older ones (a
  backfill of months) are skipped and the cursor moves past them, so a channel is never
  flooded; with an owner (``character_id`` or ``corporation_id``) only its kills and
  losses, and only what every filter accepts; with ``delay_s`` a kill waits in the outbox
  until it is that old (:mod:`killcli.events.filters` decides all of it);
* one deliverer per webhook at a time, through the lease ``webhook:<id>``;
* after each successful post the cursor moves and is committed. **At least once**: a
  process that dies between Discord's 204 and that commit posts the event again when it
  comes back (a window of milliseconds);
* a 429 stores ``blocked_until`` from ``retry_after``/``Retry-After``, and so does an empty
  ``X-RateLimit-Remaining`` bucket after a success: the webhook rests until then, whatever
  process delivers next;
* 5xx and network errors are retried a few times with backoff, then the webhook rests
  ``cooldown_s`` with the error in ``last_error``; 401/403/404/410 disable it; another 4xx
  skips that one message (recorded in ``last_error``) so it cannot jam the webhook.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
from sqlalchemy import Row, select

from killcli.clock import SYSTEM_CLOCK, Clock
from killcli.db import Database
from killcli.errors import InputError
from killcli.events.filters import Selection, Verdict, load_filters
from killcli.events.hookconfig import find_webhook_row, save_webhook, webhook_row
from killcli.events.hookpost import (
    DEFAULT_POLICY,
    PostResult,
    PostStatus,
    RetryPolicy,
    post_message,
)
from killcli.events.outbox import WEBHOOKS, OutboxEvent, iter_events
from killcli.events.render import webhook_body
from killcli.holders import this_owner
from killcli.kills import Owner
from killcli.queue.leases import Leases
from killcli.sso.crypto import TokenCipher
from killcli.sync.events import KILLMAIL_SAVED

EVENTS_PER_ROUND = 50
LEASE_TTL_S = 120.0
TEST_PREFIX = "killsync test message: "


def _decrypt(db: Database, cipher: TokenCipher, row: Row[Any], now: datetime) -> str | None:
    try:
        return cipher.decrypt(row.url_enc)
    except InputError as exc:
        save_webhook(db, row.id, last_error=_stamp(now, str(exc)))
        return None


def _after(now: datetime, seconds: float | None) -> datetime | None:
    return None if seconds is None else now + timedelta(seconds=seconds)


def _stamp(now: datetime, text: str) -> str:
    """``last_error`` text with its time: it stays until the next error or test."""
    return f"{now:%Y-%m-%d %H:%M:%S}Z {text}"


def _state(result: PostResult, now: datetime) -> dict[str, Any]:
    """The columns a post's outcome sets on its webhook (cursor aside)."""
    if result.status is PostStatus.GONE:
        return {"enabled": False, "last_error": _stamp(now, f"{result.detail}; disabled")}
    values: dict[str, Any] = {"blocked_until": _after(now, result.wait_s)}
    if result.status is PostStatus.FAILED:
        values["last_error"] = _stamp(now, result.detail)
    return values


def _record(db: Database, row: Row[Any], result: PostResult, now: datetime) -> None:
    """Persist what a test message says about the webhook (a success clears errors)."""
    values = _state(result, now)
    if result.status is PostStatus.OK:
        values["last_error"] = None
    if result.status is not PostStatus.REJECTED:
        save_webhook(db, row.id, **values)


def sample_payload(now: datetime) -> dict[str, Any]:
    """A made-up fresh kill for ``webhooks test``."""
    victim = {
        "character_id": None,
        "character_name": "Test Pilot",
        "ship_type_id": 670,
        "ship_type_name": "Capsule",
    }
    final = {
        "character_id": None,
        "character_name": "killsync",
        "ship_type_id": 587,
        "ship_type_name": "Rifter",
    }
    return {
        "killmail_id": None,
        "killmail_time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "solar_system_id": 30000142,
        "solar_system_name": "Jita",
        "victim": victim,
        "final_blow": final,
        "attacker_count": 1,
    }


def send_test_message(
    db: Database,
    cipher: TokenCipher,
    http: httpx.Client,
    webhook_id: int,
    *,
    clock: Clock | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> PostResult:
    """Post one sample message now (unless the webhook must rest) and record the outcome:
    a deleted webhook is disabled, a 429 makes it rest, a success clears ``last_error``."""
    clock = clock or SYSTEM_CLOCK
    row, now = webhook_row(db, webhook_id), clock.now()
    if row.blocked_until is not None and row.blocked_until > now:
        wait_s = (row.blocked_until - now).total_seconds()
        return PostResult(PostStatus.RATE_LIMITED, "resting after a rate limit", wait_s, 0)
    url = _decrypt(db, cipher, row, now)
    if url is None:
        return PostResult(PostStatus.FAILED, "cannot decrypt the stored URL", None, 0)
    body = webhook_body(row.kind, sample_payload(now), prefix=TEST_PREFIX)
    result = post_message(http, url, body, policy=policy, sleep=clock.sleep)
    _record(db, row, result, clock.now())
    return result


# -- delivery ------------------------------------------------------------------------------


class RoundOutcome(StrEnum):
    DONE = "done"  # caught up with the outbox
    MORE = "more"  # stopped at the per-round limit: call again
    RESTING = "resting"  # rate limited or cooling down after errors
    HELD = "held"  # the next kill is not as old as the webhook's delay yet
    DISABLED = "disabled"
    ERROR = "error"  # URL cannot be decrypted
    BUSY = "busy"  # another process is delivering to it


@dataclass(frozen=True)
class WebhookRound:
    """What one round did for one webhook."""

    webhook_id: int
    outcome: RoundOutcome
    posted: int = 0
    skipped: int = 0
    detail: str = ""
    blocked_until: datetime | None = None
    last_status: PostStatus | None = None  # of the last post this round, if any
    held_until: datetime | None = None  # HELD: when the next kill is old enough


@dataclass(frozen=True)
class DeliveryResult:
    """One :func:`deliver_pending` round over every due webhook."""

    rounds: tuple[WebhookRound, ...] = ()

    @property
    def posted(self) -> int:
        return sum(r.posted for r in self.rounds)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.rounds)

    @property
    def more(self) -> bool:
        return any(r.outcome is RoundOutcome.MORE for r in self.rounds)

    @property
    def held_until(self) -> datetime | None:
        """When the first kill held for a delay is due, None when none is held."""
        return min((r.held_until for r in self.rounds if r.held_until), default=None)

    def count(self, outcome: RoundOutcome) -> int:
        return sum(r.outcome is outcome for r in self.rounds)

    @property
    def failed(self) -> int:
        """Webhooks that could not be served: errors after retries, undecryptable URLs."""
        return sum(
            r.outcome is RoundOutcome.ERROR or r.last_status is PostStatus.FAILED
            for r in self.rounds
        )


@dataclass
class _Run:
    """The state of one webhook's round (mutable; internal)."""

    row: Row[Any]
    url: str
    cursor: int
    now: datetime
    posted: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class _Deps:
    db: Database
    http: httpx.Client
    clock: Clock
    policy: RetryPolicy
    leases: Leases
    owner: str
    limit: int


def _selection(row: Row[Any]) -> Selection:
    return Selection(
        Owner.of(row.character_id, row.corporation_id),
        tuple(load_filters(row.filters)),
        row.max_age_s,
        row.delay_s,
    )


def _judge(deps: _Deps, run: _Run, event: OutboxEvent) -> tuple[Verdict, datetime | None]:
    if event.event_type != KILLMAIL_SAVED:
        return Verdict.SKIP, None
    return _selection(run.row).judge(event.payload, deps.db, run.now)


def _finish(
    deps: _Deps,
    run: _Run,
    outcome: RoundOutcome,
    result: PostResult | None = None,
    held_until: datetime | None = None,
) -> WebhookRound:
    values = {} if result is None else _state(result, deps.clock.now())
    save_webhook(deps.db, run.row.id, run.cursor, **values)
    return WebhookRound(
        run.row.id,
        outcome,
        run.posted,
        run.skipped,
        result.detail if result else "",
        values.get("blocked_until"),
        result.status if result else None,
        held_until,
    )


def _post_event(deps: _Deps, run: _Run, event: OutboxEvent) -> PostResult:
    body = webhook_body(run.row.kind, event.payload)
    result = post_message(deps.http, run.url, body, policy=deps.policy, sleep=deps.clock.sleep)
    if result.status is PostStatus.OK:
        run.cursor, run.posted = event.id, run.posted + 1
        save_webhook(deps.db, run.row.id, run.cursor, blocked_until=None)
    elif result.status is PostStatus.REJECTED:
        run.cursor, run.skipped = event.id, run.skipped + 1
        save_webhook(
            deps.db,
            run.row.id,
            run.cursor,
            last_error=_stamp(run.now, f"event {event.id}: {result.detail}; skipped"),
        )
    return result


_STOPS = {
    PostStatus.RATE_LIMITED: RoundOutcome.RESTING,
    PostStatus.FAILED: RoundOutcome.RESTING,
    PostStatus.GONE: RoundOutcome.DISABLED,
}


def _drain(deps: _Deps, run: _Run) -> WebhookRound:
    events = list(iter_events(deps.db, run.cursor, deps.limit, now=run.now))
    for event in events:
        verdict, due = _judge(deps, run, event)
        if verdict is Verdict.HOLD:  # this kill and everything after it wait
            return _finish(deps, run, RoundOutcome.HELD, held_until=due)
        if verdict is Verdict.SKIP:
            run.cursor, run.skipped = event.id, run.skipped + 1
            continue
        result = _post_event(deps, run, event)
        if result.status in _STOPS:
            return _finish(deps, run, _STOPS[result.status], result)
        if result.wait_s is not None:  # posted, and the bucket is empty: rest until reset
            return _finish(deps, run, RoundOutcome.RESTING, result)
        lease = f"webhook:{run.row.id}"
        if not deps.leases.renew(lease, deps.owner, LEASE_TTL_S):
            return _finish(deps, run, RoundOutcome.BUSY)  # taken over: stop posting
    more = len(events) >= deps.limit
    return _finish(deps, run, RoundOutcome.MORE if more else RoundOutcome.DONE)


def _deliver_one(deps: _Deps, cipher: TokenCipher, webhook_id: int) -> WebhookRound:
    lease = f"webhook:{webhook_id}"
    if not deps.leases.acquire(lease, deps.owner, LEASE_TTL_S):
        return WebhookRound(webhook_id, RoundOutcome.BUSY)
    try:
        # Re-read under the lease: the cursor may have moved.
        row = find_webhook_row(deps.db, webhook_id)
        now = deps.clock.now()
        if row is None:
            return WebhookRound(webhook_id, RoundOutcome.DISABLED, detail="removed")
        if not row.enabled or (row.blocked_until is not None and row.blocked_until > now):
            return WebhookRound(webhook_id, RoundOutcome.RESTING, blocked_until=row.blocked_until)
        url = _decrypt(deps.db, cipher, row, now)
        if url is None:
            return WebhookRound(webhook_id, RoundOutcome.ERROR, detail="cannot decrypt URL")
        return _drain(deps, _Run(row, url, row.cursor_event_id, now))
    finally:
        deps.leases.release(lease, deps.owner)


def due_webhook_ids(db: Database, now: datetime) -> list[int]:
    """Enabled webhooks that are not resting."""
    resting = WEBHOOKS.c.blocked_until.is_not(None) & (WEBHOOKS.c.blocked_until > now)
    with db.session() as session:
        return list(
            session.scalars(
                select(WEBHOOKS.c.id)
                .where(WEBHOOKS.c.enabled.is_(True), ~resting)
                .order_by(WEBHOOKS.c.id)
            )
        )


def deliver_pending(
    db: Database,
    cipher: TokenCipher,
    http: httpx.Client,
    clock: Clock | None = None,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    limit: int = EVENTS_PER_ROUND,
) -> DeliveryResult:
    """One delivery round over every due webhook (see the module docstring).

    Never sleeps for a rate limit (it records ``blocked_until`` and moves on); only 5xx
    and network retries wait, a few seconds at most. Call it after each job and on a
    timer; :func:`run_delivery` is the loop ``killsync webhooks deliver`` runs.
    """
    clock = clock or SYSTEM_CLOCK
    deps = _Deps(
        db,
        http,
        clock,
        policy,
        Leases(db, clock=clock),
        this_owner(f"deliver-{secrets.token_hex(8)}"),
        limit,
    )
    return DeliveryResult(
        tuple(
            _deliver_one(deps, cipher, webhook_id)
            for webhook_id in due_webhook_ids(db, clock.now())
        )
    )


def next_wake_s(db: Database, now: datetime, poll_s: float) -> float:
    """Seconds until the next resting webhook may post again, at most ``poll_s``."""
    with db.session() as session:
        soonest: datetime | None = session.scalar(
            select(WEBHOOKS.c.blocked_until)
            .where(WEBHOOKS.c.enabled.is_(True), WEBHOOKS.c.blocked_until > now)
            .order_by(WEBHOOKS.c.blocked_until)
            .limit(1)
        )
    if soonest is None:
        return poll_s
    return max(0.0, min(poll_s, (soonest - now).total_seconds()))


@dataclass(frozen=True)
class DeliveryTotals:
    """What :func:`run_delivery` did over all its rounds."""

    rounds: int
    posted: int
    skipped: int
    disabled: int
    failed: int


def run_delivery(
    db: Database,
    cipher: TokenCipher,
    http: httpx.Client,
    *,
    wait: Callable[[float], bool],
    once: bool = False,
    poll_s: float = 5.0,
    clock: Clock | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    on_round: Callable[[DeliveryResult], None] | None = None,
) -> DeliveryTotals:
    """Deliver rounds until ``wait`` returns True (``threading.Event.wait``: stop was
    requested) or after one round with ``once``. Between rounds it waits until the next
    webhook stops resting, or ``poll_s`` for new events."""
    clock = clock or SYSTEM_CLOCK
    rounds = posted = skipped = disabled = failed = 0
    while True:
        result = deliver_pending(db, cipher, http, clock, policy=policy)
        rounds, posted, skipped = rounds + 1, posted + result.posted, skipped + result.skipped
        disabled, failed = disabled + result.count(RoundOutcome.DISABLED), failed + result.failed
        if on_round is not None:
            on_round(result)
        pause = 0.0 if result.more else next_wake_s(db, clock.now(), poll_s)
        if result.held_until is not None:
            pause = max(0.0, min(pause, (result.held_until - clock.now()).total_seconds()))
        if once or wait(pause):
            return DeliveryTotals(rounds, posted, skipped, disabled, failed)
