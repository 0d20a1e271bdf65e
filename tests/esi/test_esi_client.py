"""The ESI client against the fake: headers, retries, waits, ETags and typed calls."""

from __future__ import annotations

import httpx
import jwt
import pytest

from killcli import __version__
from killcli.errors import EsiHttpError, EsiUnavailable
from killcli.esi import (
    COMPATIBILITY_DATE,
    BucketKey,
    EsiClient,
    MalformedResponse,
    ManualClock,
    NameResult,
    RetryPolicy,
    fetch_names,
    user_agent,
)
from tests.esi.conftest import UA, MakeClient
from tests.esi.esi_fakes import FakeEsi, hash_of

RATE_HEADERS = {
    "X-Ratelimit-Group": "killmail",
    "X-Ratelimit-Limit": "3600/15m",
    "X-Ratelimit-Remaining": "0",
    "X-Ratelimit-Used": "0",
}


def test_user_agent_names_app_version_and_contact() -> None:
    assert user_agent("ops@example.org") == f"killsync/{__version__} (ops@example.org)"
    assert user_agent(None) == f"killsync/{__version__}"


def test_every_request_carries_ua_compat_date_and_accept(client: EsiClient, fake: FakeEsi) -> None:
    fake.set_list(7, [1, 2])
    client.fetch_killmail(1, hash_of(1))
    client.fetch_killmail_list_page(7, "secret-access-token")
    killmail_req, list_req = fake.seen
    for seen in fake.seen:
        assert seen.headers["user-agent"] == UA
        assert seen.headers["x-compatibility-date"] == COMPATIBILITY_DATE == "2025-08-26"
        assert seen.headers["accept"] == "application/json"
    assert "authorization" not in killmail_req.headers
    assert list_req.headers["authorization"] == "Bearer secret-access-token"
    assert list_req.query == {"page": "1"}
    assert "secret-access-token" not in str(fake.seen[1].path)


def test_killmail_body_is_returned_raw_with_unknown_fields(client: EsiClient) -> None:
    body = client.fetch_killmail(42, hash_of(42))
    assert body["killmail_id"] == 42
    assert body["unknown_future_field"] == {"kept": True}


def test_wrong_hash_is_a_422_and_never_retried(client: EsiClient, fake: FakeEsi) -> None:
    with pytest.raises(EsiHttpError) as caught:
        client.fetch_killmail(42, "0" * 40)
    assert caught.value.status == 422
    assert "Invalid killmail_id" in str(caught.value)
    assert len(fake.seen) == 1
    assert client.stats.snapshot().requests == {("killmail", 422): 1}


def test_body_of_another_killmail_is_malformed_not_retried(
    client: EsiClient, fake: FakeEsi
) -> None:
    fake.scripted.append(lambda _r: httpx.Response(200, json={"killmail_id": 43}))
    with pytest.raises(MalformedResponse, match="killmail_id is not 42"):
        client.fetch_killmail(42, hash_of(42))
    assert len(fake.seen) == 1


def test_5xx_retried_with_exponential_backoff_and_counted(
    client: EsiClient, fake: FakeEsi, clock: ManualClock
) -> None:
    fake.script(502, 503, 504)
    assert client.fetch_killmail(1, hash_of(1))["killmail_id"] == 1
    # initial 1 s doubling, "equal jitter" with rand=0.5: 3/4 of 1, 2 and 4 seconds
    assert clock.sleeps == [0.75, 1.5, 3.0]
    stats = client.stats.snapshot()
    assert stats.retries == {"killmail": 3}
    assert stats.requests == {
        ("killmail", 502): 1,
        ("killmail", 503): 1,
        ("killmail", 504): 1,
        ("killmail", 200): 1,
    }


def test_5xx_gives_up_after_max_attempts(client: EsiClient, fake: FakeEsi) -> None:
    fake.script(500, 500, 500, 500, 500)
    with pytest.raises(EsiUnavailable, match=r"ESI answered 500 \(4 attempts\)"):
        client.fetch_killmail(1, hash_of(1))
    assert len(fake.seen) == 4


def test_retry_after_beats_backoff(client: EsiClient, fake: FakeEsi, clock: ManualClock) -> None:
    fake.script(503, headers={"Retry-After": "7"})
    client.fetch_status()
    assert clock.sleeps == [7.0]


def test_timeouts_and_connection_errors_are_retried(client: EsiClient, fake: FakeEsi) -> None:
    fake.script_raise(httpx.ReadTimeout("slow"))
    fake.script_raise(httpx.ConnectError("refused"))
    assert client.fetch_killmail(1, hash_of(1))["killmail_id"] == 1
    stats = client.stats.snapshot()
    assert stats.transport_errors == {"killmail": 2}
    assert stats.total_retries == 2
    assert client.limiter is not None
    assert all(b.reserved_tokens == 0 for b in client.limiter.snapshot().buckets)


def test_truncated_json_is_retried(client: EsiClient, fake: FakeEsi) -> None:
    fake.scripted.append(lambda _r: httpx.Response(200, content=b'{"killmail_id": 1, "vic'))
    assert client.fetch_killmail(1, hash_of(1))["killmail_id"] == 1
    assert len(fake.seen) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_never_retried(client: EsiClient, fake: FakeEsi, status: int) -> None:
    fake.script(status)
    with pytest.raises(EsiHttpError) as caught:
        client.fetch_status()
    assert caught.value.status == status
    assert len(fake.seen) == 1


def test_429_waits_retry_after_and_does_not_use_the_5xx_budget(
    make_client: MakeClient, fake: FakeEsi, clock: ManualClock
) -> None:
    client = make_client(retry_policy=RetryPolicy(max_attempts=1))
    fake.script(429, 429, headers={**RATE_HEADERS, "Retry-After": "30"})
    assert client.fetch_killmail(1, hash_of(1))["killmail_id"] == 1
    assert clock.sleeps == [30.0, 30.0]  # held by the limiter's bucket block each time
    assert client.stats.snapshot().rate_limited == 2


def test_429_without_rate_headers_on_an_unknown_route_still_waits(
    make_client: MakeClient, fake: FakeEsi, clock: ManualClock
) -> None:
    client = make_client()
    fake.script(429, headers={"Retry-After": "12"})
    client.fetch_status()
    assert clock.sleeps == [12.0]


def test_rate_limited_retries_are_bounded(make_client: MakeClient, fake: FakeEsi) -> None:
    client = make_client(retry_policy=RetryPolicy(max_rate_limited=2))
    fake.script(429, 429, 429, 429, headers={**RATE_HEADERS, "Retry-After": "1"})
    with pytest.raises(EsiUnavailable, match="429"):
        client.fetch_killmail(1, hash_of(1))
    assert len(fake.seen) == 3


def test_420_pauses_until_the_error_window_resets(
    client: EsiClient, fake: FakeEsi, clock: ManualClock
) -> None:
    fake.script(420, headers={"X-ESI-Error-Limit-Remain": "0", "X-ESI-Error-Limit-Reset": "20"})
    client.fetch_status()
    assert clock.sleeps == [21.0]
    assert fake.seen[1].at_s >= fake.seen[0].at_s + 20
    assert client.stats.snapshot().error_limited == 1


@pytest.mark.parametrize("reset", ["999999999", "-5"])
def test_a_bogus_error_limit_reset_pauses_at_most_one_window(
    client: EsiClient, fake: FakeEsi, clock: ManualClock, reset: str
) -> None:
    """A broken proxy's header must not stop the worker (and, through the ledger, its
    egress) for years: a pause is at most the 60 s error window."""
    fake.script(420, headers={"X-ESI-Error-Limit-Remain": "0", "X-ESI-Error-Limit-Reset": reset})
    client.fetch_status()
    assert len(clock.sleeps) == 1 and clock.sleeps[0] <= 61.0


def test_a_bogus_retry_after_waits_at_most_one_bucket_window(
    make_client: MakeClient, fake: FakeEsi, clock: ManualClock
) -> None:
    client = make_client(limiter=None)
    fake.script(429, headers={**RATE_HEADERS, "Retry-After": "1e12"})
    client.fetch_killmail(1, hash_of(1))
    assert clock.sleeps == [900.0]


def test_works_without_a_limiter(
    make_client: MakeClient, fake: FakeEsi, clock: ManualClock
) -> None:
    client = make_client(limiter=None)
    fake.script(420, headers={"X-ESI-Error-Limit-Reset": "20"})
    client.fetch_status()
    assert clock.sleeps == [20.0]


def test_etag_is_sent_back_and_304_is_a_cheap_hit(client: EsiClient, fake: FakeEsi) -> None:
    fake.set_list(7, [5, 4, 3, 2, 1])
    first = client.fetch_killmail_list_page(7, "tok", page=1)
    assert first.status == 200 and first.pages == 2 and first.etag
    assert [ref.killmail_id for ref in first.items] == [5, 4, 3]
    assert first.items[0] == (5, hash_of(5))
    assert "if-none-match" not in fake.seen[0].headers
    again = client.fetch_killmail_list_page(7, "tok", page=1, etag=first.etag)
    assert fake.seen[1].headers["if-none-match"] == first.etag
    assert again.not_modified and again.items == () and again.etag == first.etag
    stats = client.stats.snapshot()
    assert stats.not_modified == 1
    assert stats.tokens_spent == {"char-killmail:7": 3}


def test_only_the_etag_given_is_sent_and_only_on_page_one(client: EsiClient, fake: FakeEsi) -> None:
    fake.set_list(7, [5, 4, 3, 2, 1])
    client.fetch_killmail_list_page(7, "tok")
    client.fetch_killmail_list_page(7, "tok", etag='"mine"')
    client.fetch_killmail_list_page(7, "tok", etag='"mine"', conditional=False)
    client.fetch_killmail_list_page(7, "tok", page=2, etag='"mine"')
    assert [seen.headers.get("if-none-match") for seen in fake.seen] == [
        None,
        '"mine"',
        None,
        None,
    ]


def test_names_404_is_a_distinct_error_and_fetch_names_isolates_bad_ids(
    client: EsiClient, fake: FakeEsi
) -> None:
    fake.known_names = {i: (f"name {i}", "character") for i in range(1, 9)}
    assert client.post_universe_names([1, 2, 2]) == [
        NameResult(1, "name 1", "character"),
        NameResult(2, "name 2", "character"),
    ]
    with pytest.raises(EsiHttpError) as caught:
        client.post_universe_names([1, 99])
    assert caught.value.status == 404
    result = fetch_names(client, [*range(1, 9), 99, 98])
    assert sorted(n.id for n in result.names) == list(range(1, 9))
    assert sorted(result.unknown_ids) == [98, 99]


def test_names_refuses_more_than_1000_ids(client: EsiClient) -> None:
    with pytest.raises(ValueError, match="at most 1000"):
        client.post_universe_names(range(1001))
    assert client.post_universe_names([]) == []


def test_status(client: EsiClient) -> None:
    status = client.fetch_status()
    assert status.players == 20000
    assert status.start_time.tzinfo is not None


def test_generic_request_keys_the_bucket_by_the_token_character(
    client: EsiClient, fake: FakeEsi
) -> None:
    fake.set_list(90000001, [1])
    token = jwt.encode({"sub": "CHARACTER:EVE:90000001"}, "k" * 32, algorithm="HS256")
    response = client.request(
        "GET", "/characters/90000001/killmails/recent", token=token, params={"page": 1}
    )
    assert response.status == 200 and response.pages == 1
    assert client.limiter is not None
    keys = [b.key for b in client.limiter.snapshot().buckets]
    assert keys == [BucketKey("char-killmail", 90000001)]


def test_messages_and_reprs_never_show_the_token(client: EsiClient, fake: FakeEsi) -> None:
    fake.script(403)
    with pytest.raises(EsiHttpError) as caught:
        client.fetch_killmail_list_page(7, "very-secret-token")
    assert "very-secret-token" not in str(caught.value)
    assert "very-secret-token" not in repr(caught.value)
