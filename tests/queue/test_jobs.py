"""The job message: its exact wire format and the detection of poison."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from killcli.queue import Job, Outcome, OutcomeKind, PoisonMessage, RetryPolicy, decode
from killcli.queue.jobs import peek_ids
from killcli.queue.rabbit_topology import Topology

WHEN = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
GOOD = {
    "v": 1,
    "job_id": "j-1",
    "character_id": 90000001,
    "requested_at": "2026-03-01T10:30:00+00:00",
    "full": False,
    "attempt": 0,
}
CORPORATION = {
    "v": 2,
    "job_id": "j-9",
    "corporation_id": 98000001,
    "requested_at": "2026-03-01T10:30:00+00:00",
    "full": True,
    "attempt": 1,
}


def test_encode_is_compact_json_with_the_documented_keys() -> None:
    job = Job("j-1", 90000001, WHEN, False, 0)
    assert job.encode() == (
        b'{"v":1,"job_id":"j-1","character_id":90000001,'
        b'"requested_at":"2026-03-01T10:30:00+00:00","full":false,"attempt":0}'
    )


def test_round_trip_normalises_time_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    job = Job("j-2", 2112625428, WHEN.astimezone(paris), True, 3)
    back = decode(job.encode())
    assert back == Job("j-2", 2112625428, WHEN, True, 3)
    assert back.requested_at.utcoffset() == timedelta(0)


def test_new_jobs_have_distinct_ids_and_no_attempts() -> None:
    first, second = Job.new(7, now=lambda: WHEN), Job.new(7, full=True, now=lambda: WHEN)
    assert first.job_id != second.job_id
    assert (first.attempt, second.full, first.requested_at) == (0, True, WHEN)
    assert first.next_attempt().attempt == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({**GOOD, "v": 3}).encode(), "unknown job version 3"),
        (json.dumps({**GOOD, "v": True}).encode(), "unknown job version True"),
        (json.dumps({**GOOD, "v": 2}).encode(), "missing ['corporation_id']"),
        (json.dumps({**CORPORATION, "v": 1}).encode(), "unexpected ['corporation_id']"),
        (
            json.dumps({**CORPORATION, "character_id": 90000001}).encode(),
            "unexpected ['character_id']",
        ),
        (json.dumps({**CORPORATION, "corporation_id": 0}).encode(), "corporation_id must be posi"),
        (
            json.dumps({**CORPORATION, "corporation_id": "98"}).encode(),
            "corporation_id must be int",
        ),
        (json.dumps({k: v for k, v in GOOD.items() if k != "v"}).encode(), "version None"),
        (json.dumps({**GOOD, "access_token": "eyJ..."}).encode(), "unexpected ['access_token']"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "full"}).encode(), "missing ['full']"),
        (json.dumps({**GOOD, "character_id": "90000001"}).encode(), "character_id must be int"),
        (json.dumps({**GOOD, "character_id": True}).encode(), "character_id must be int"),
        (json.dumps({**GOOD, "character_id": -5}).encode(), "character_id must be positive"),
        (json.dumps({**GOOD, "character_id": 0}).encode(), "character_id must be positive"),
        (json.dumps({**GOOD, "attempt": -1}).encode(), "attempt must not be negative"),
        (json.dumps({**GOOD, "attempt": 1.0}).encode(), "attempt must be int"),
        (json.dumps({**GOOD, "full": "yes"}).encode(), "full must be bool"),
        (json.dumps({**GOOD, "job_id": ""}).encode(), "job_id must be 1-64"),
        (json.dumps({**GOOD, "job_id": "x" * 65}).encode(), "job_id must be 1-64"),
        (json.dumps({**GOOD, "requested_at": "yesterday"}).encode(), "not an ISO timestamp"),
        (json.dumps({**GOOD, "requested_at": "2026-03-01T10:30:00"}).encode(), "timezone"),
        (b" " * 5000, "too large"),
    ],
)
def test_poison_is_detected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage) as caught:
        decode(raw)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_the_good_document_decodes() -> None:
    assert decode(json.dumps(GOOD).encode()) == Job("j-1", 90000001, WHEN, False, 0)


def test_a_corporation_job_is_version_2_with_its_own_key() -> None:
    job = Job.for_corporation(98000001, full=True, now=lambda: WHEN)
    assert (job.version, job.character_id, job.corporation_id) == (2, None, 98000001)
    assert json.loads(job.encode()) == {**CORPORATION, "job_id": job.job_id, "attempt": 0}
    back = decode(json.dumps(CORPORATION).encode())
    assert back == Job("j-9", None, WHEN, True, 1, version=2, corporation_id=98000001)
    assert (back.owner_key, back.owner_id, back.owner_label) == (
        "corporation:98000001",
        98000001,
        "corporation 98000001",
    )
    assert Job.new(98000001).owner_key == "98000001"  # the same id as a character: another list


@pytest.mark.parametrize(
    ("character_id", "corporation_id", "version"),
    [(None, None, 1), (7, 98000001, 1), (7, 98000001, 2), (None, 98000001, 1), (7, None, 2)],
)
def test_a_job_names_exactly_one_list(
    character_id: int | None, corporation_id: int | None, version: int
) -> None:
    with pytest.raises(ValueError, match="exactly one list"):
        Job("j", character_id, WHEN, False, 0, version=version, corporation_id=corporation_id)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (json.dumps(GOOD), "90000001"),
        (json.dumps(CORPORATION), "corporation:98000001"),
        (json.dumps({**CORPORATION, "character_id": 5}), None),  # names two lists
        (json.dumps({**GOOD, "character_id": -1}), None),
        ("[1]", None),
        ("{not json", None),
    ],
)
def test_peeking_at_poison_finds_its_list_only_when_it_names_one(raw: str, key: str | None) -> None:
    assert peek_ids(raw.encode()).owner_key == key


def test_backoff_grows_with_jitter_and_stops_at_the_cap() -> None:
    policy, rng = RetryPolicy(max_attempts=10, base_s=10, cap_s=100), random.Random(7)
    for failures, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)]:
        waits = {policy.backoff_s(failures, rng) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 40  # jittered, not one fixed value


def test_settlement_retries_then_gives_up_with_the_reason() -> None:
    policy, rng = RetryPolicy(max_attempts=3, base_s=1, cap_s=4), random.Random(1)
    first = policy.settle(Outcome.retry("ESI\n502"), tries=1, rng=rng)
    assert (first.kind, first.reason) == (OutcomeKind.RETRY, "ESI 502")
    assert first.delay_s is not None and 0.5 <= first.delay_s <= 1
    assert policy.settle(Outcome.retry("x", delay_s=42), tries=2, rng=rng).delay_s == 42
    last = policy.settle(Outcome.retry("ESI 502"), tries=3, rng=rng)
    assert (last.kind, last.reason) == (OutcomeKind.DEAD, "gave up after 3 attempts: ESI 502")
    assert policy.settle(Outcome.dead("gone"), tries=1, rng=rng).kind is OutcomeKind.DEAD
    assert policy.settle(Outcome.done(), tries=3, rng=rng).kind is OutcomeKind.DONE


def test_delay_tiers_round_down_to_powers_of_two_milliseconds() -> None:
    topology = Topology("q")
    assert topology.tier_for(0) == 64
    assert topology.tier_for(0.1) == 64
    assert topology.tier_for(1.0) == 512
    assert topology.tier_for(1.1) == 1024
    assert topology.tier_for(3600) == 2**21
    assert topology.tier_for(10**6) == 2**22
    assert all(topology.delay_queue(t) in topology.queues() for t in topology.tiers_ms)
