"""Webhook delivery against a real local HTTP server that answers like Discord and Slack."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import httpx

from killcli.clock import ManualClock
from killcli.db import Database
from killcli.events.hookconfig import WebhookInfo, add_webhook, get_webhook
from killcli.events.hookpost import PostStatus, RetryPolicy, make_client
from killcli.events.webhooks import (
    DeliveryResult,
    RoundOutcome,
    deliver_pending,
    run_delivery,
    send_test_message,
)
from killcli.sso.crypto import TokenCipher
from tests.events.chat import ChatServer, Reply, rate_limited
from tests.events.conftest import add_events, make_payload

POLICY = RetryPolicy(attempts=3, backoff_s=0.01, backoff_cap_s=0.05, cooldown_s=60.0)


def _discord(
    db: Database,
    cipher: TokenCipher,
    chat: ChatServer,
    *,
    character_id: int | None = None,
    max_age_s: int = 3600,
) -> WebhookInfo:
    return add_webhook(
        db,
        cipher,
        "discord",
        chat.discord_url(),
        allow_insecure=True,
        character_id=character_id,
        max_age_s=max_age_s,
    )


def _deliver(
    db: Database, cipher: TokenCipher, http: httpx.Client, clock: ManualClock
) -> DeliveryResult:
    return deliver_pending(db, cipher, http, clock, policy=POLICY)


def test_a_fresh_event_is_posted_once(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    add_events(db, [make_payload(1, clock.now())])  # before the webhook: not posted
    hook = _discord(db, cipher, chat)
    add_events(db, [make_payload(2, clock.now() - timedelta(minutes=5), victim="@everyone")])
    first = _deliver(db, cipher, http, clock)
    assert (first.posted, first.rounds[0].outcome) == (1, RoundOutcome.DONE)
    assert _deliver(db, cipher, http, clock).posted == 0
    assert len(chat.posted) == 1
    body = chat.posted[0]
    assert body["allowed_mentions"] == {"parse": []} and "\\@everyone" in body["content"]
    assert body["embeds"][0]["title"] == "Killmail 2"
    after = get_webhook(db, cipher, hook.id)
    assert after.cursor_event_id > hook.cursor_event_id and after.last_error is None


def test_a_backfill_is_skipped_and_the_cursor_moves_past_it(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    hook = _discord(db, cipher, chat, max_age_s=3600)
    now = clock.now()
    backfill = [make_payload(k, now - timedelta(days=k)) for k in range(1, 120)]
    add_events(db, [*backfill, make_payload(500, now - timedelta(minutes=59))])
    rounds = 0
    while True:  # 120 events, 50 a round
        result = _deliver(db, cipher, http, clock)
        rounds += 1
        if result.rounds[0].outcome is not RoundOutcome.MORE:
            break
    assert rounds == 3
    assert [b["embeds"][0]["title"] for b in chat.posted] == ["Killmail 500"]
    assert get_webhook(db, cipher, hook.id).cursor_event_id == hook.cursor_event_id + 120


def test_character_filter(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    _discord(db, cipher, chat, character_id=77)
    now = clock.now()
    add_events(db, [make_payload(1, now, character_id=76), make_payload(2, now, character_id=77)])
    assert _deliver(db, cipher, http, clock).posted == 1
    assert chat.posted[0]["embeds"][0]["title"] == "Killmail 2"


def test_a_429_is_obeyed_then_the_post_succeeds_once(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    hook = _discord(db, cipher, chat)
    add_events(db, [make_payload(1, clock.now())])
    chat.script.append(rate_limited(30.0))
    first = _deliver(db, cipher, http, clock)
    assert first.rounds[0].outcome is RoundOutcome.RESTING
    blocked = get_webhook(db, cipher, hook.id).blocked_until
    assert blocked is not None
    assert abs((blocked - clock.now()).total_seconds() - 30.0) < 1
    clock.advance(29)
    assert _deliver(db, cipher, http, clock).rounds == ()  # still resting: no request at all
    assert len(chat.hits) == 1
    clock.advance(2)
    assert _deliver(db, cipher, http, clock).posted == 1
    assert [h.status for h in chat.hits] == [429, 204]
    assert len(chat.posted) == 1


def test_the_delivery_loop_waits_out_a_real_retry_after(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client
) -> None:
    _discord(db, cipher, chat)
    add_events(db, [make_payload(1, datetime.now().astimezone())])
    chat.script.append(rate_limited(0.4))
    stop = threading.Event()

    def wait(seconds: float) -> bool:
        stop.wait(seconds)
        return bool(chat.posted) or stop.is_set()

    threading.Timer(10, stop.set).start()
    totals = run_delivery(db, cipher, http, wait=wait, poll_s=0.05, policy=POLICY)
    stop.set()
    assert totals.posted == 1
    assert [h.status for h in chat.hits] == [429, 204]
    assert chat.hits[1].at - chat.hits[0].at >= 0.4


def test_an_empty_bucket_after_a_success_makes_the_webhook_rest(
    db: Database, cipher: TokenCipher, http: httpx.Client, clock: ManualClock
) -> None:
    chat = ChatServer(bucket_limit=2, bucket_window_s=30).start()
    try:
        hook = _discord(db, cipher, chat)
        now = clock.now()
        add_events(db, [make_payload(k, now) for k in range(1, 5)])
        result = _deliver(db, cipher, http, clock)
        assert result.posted == 2 and result.rounds[0].outcome is RoundOutcome.RESTING
        assert get_webhook(db, cipher, hook.id).blocked_until is not None
        assert _deliver(db, cipher, http, clock).posted == 0
        assert [h.status for h in chat.hits] == [204, 204]  # it never hit the 429
    finally:
        chat.stop()


def test_5xx_is_retried_and_then_rests_without_losing_the_event(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    hook = _discord(db, cipher, chat)
    add_events(db, [make_payload(1, clock.now())])
    chat.script.extend([Reply(500), Reply(502)])
    assert _deliver(db, cipher, http, clock).posted == 1  # third attempt
    assert [h.status for h in chat.hits] == [500, 502, 204]
    add_events(db, [make_payload(2, clock.now())])
    chat.script.extend([Reply(500)] * 3)
    result = _deliver(db, cipher, http, clock)
    assert (result.posted, result.failed) == (0, 1)
    info = get_webhook(db, cipher, hook.id)
    assert info.last_error and info.last_error.endswith("Z HTTP 500")
    assert info.blocked_until is not None
    clock.advance(61)
    assert _deliver(db, cipher, http, clock).posted == 1
    assert len(chat.posted) == 2


def test_a_deleted_webhook_is_disabled(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    hook = _discord(db, cipher, chat)
    chat.gone.add(chat.discord_url().rsplit("/", 1)[1])
    add_events(db, [make_payload(1, clock.now())])
    assert _deliver(db, cipher, http, clock).rounds[0].outcome is RoundOutcome.DISABLED
    info = get_webhook(db, cipher, hook.id)
    assert not info.enabled and info.last_error and "404" in info.last_error
    assert "sEcReT" not in info.last_error
    assert _deliver(db, cipher, http, clock).rounds == ()
    assert len(chat.hits) == 1


def test_a_rejected_message_is_skipped(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    hook = _discord(db, cipher, chat)
    now = clock.now()
    add_events(db, [make_payload(1, now), make_payload(2, now)])
    chat.script.append(Reply(400, {}, b'{"message": "Invalid Form Body"}'))
    assert _deliver(db, cipher, http, clock).posted == 1
    info = get_webhook(db, cipher, hook.id)
    assert info.last_error and "400" in info.last_error and info.enabled
    assert [b["embeds"][0]["title"] for b in chat.posted] == ["Killmail 2"]


def test_a_network_error_never_records_the_url(
    db: Database, cipher: TokenCipher, http: httpx.Client, clock: ManualClock
) -> None:
    hook = add_webhook(
        db, cipher, "discord", "http://127.0.0.1:1/api/webhooks/1/sEcReT", allow_insecure=True
    )
    add_events(db, [make_payload(1, clock.now())])
    assert _deliver(db, cipher, http, clock).failed == 1
    error = get_webhook(db, cipher, hook.id).last_error
    assert error and error.endswith("Z network error: ConnectError")


def test_slack(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    add_webhook(db, cipher, "slack", chat.slack_url(), allow_insecure=True)
    add_events(db, [make_payload(1, clock.now(), victim="<!channel> Boss")])
    assert _deliver(db, cipher, http, clock).posted == 1
    text = chat.posted[0]["text"]
    assert "&lt;!channel&gt; Boss" in text and "<" not in text


def test_two_deliverers_at_once_post_each_event_once(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client
) -> None:
    _discord(db, cipher, chat)
    add_events(db, [make_payload(k, datetime.now().astimezone()) for k in range(1, 21)])
    barrier = threading.Barrier(3)

    def run() -> None:
        with make_client() as client:
            barrier.wait(10)  # all three start their first round together
            for _ in range(10):
                deliver_pending(db, cipher, client, policy=POLICY)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    titles = [b["embeds"][0]["title"] for b in chat.posted]
    assert sorted(titles) == sorted(f"Killmail {k}" for k in range(1, 21))


def test_test_message(
    db: Database, cipher: TokenCipher, chat: ChatServer, http: httpx.Client, clock: ManualClock
) -> None:
    hook = _discord(db, cipher, chat)
    result = send_test_message(db, cipher, http, hook.id, clock=clock, policy=POLICY)
    assert result.status is PostStatus.OK
    assert chat.posted[0]["content"].startswith("killsync test message")
    chat.gone.add(chat.discord_url().rsplit("/", 1)[1])
    gone = send_test_message(db, cipher, http, hook.id, clock=clock, policy=POLICY)
    assert gone.status is PostStatus.GONE
    assert not get_webhook(db, cipher, hook.id).enabled
