"""Webhook URL shapes and masking, and message bodies that cannot ping or format."""

from __future__ import annotations

import re
from datetime import datetime

import httpx
import pytest

from killcli.errors import UsageError
from killcli.events.hookpost import (
    PostStatus,
    RetryPolicy,
    classify,
    make_client,
    post_message,
    retry_after_s,
)
from killcli.events.hookurl import WebhookKind, mask_url, validate_url
from killcli.events.render import discord_body, kill_line, slack_body
from tests.events.conftest import make_payload

DISCORD = "https://discord.com/api/webhooks/112233445566778899/AbC-dEf_123.xyz"
SLACK = "https://hooks.slack.com/services/T0001/B0002/sEcReT1234567890"
EVIL = "@everyone <@123> <@&456> [b]Boss[/b] *bold* __u__ `code` [x](https://e.vil) # h"


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        (WebhookKind.DISCORD, DISCORD),
        (WebhookKind.DISCORD, "https://discordapp.com/api/webhooks/1/tok"),
        (WebhookKind.DISCORD, "https://ptb.discord.com/api/v10/webhooks/1/tok?thread_id=5"),
        (WebhookKind.SLACK, SLACK),
    ],
)
def test_valid_urls(kind: WebhookKind, url: str) -> None:
    assert validate_url(kind, f"  {url}\n") == url


@pytest.mark.parametrize(
    ("kind", "url", "why"),
    [
        (WebhookKind.DISCORD, DISCORD.replace("https", "http"), "is not https"),
        (WebhookKind.DISCORD, "https://discord.evil.com/api/webhooks/1/AbC-dEf_123", "host"),
        (WebhookKind.DISCORD, "https://discord.com/api/channels/1/AbC-dEf_123", "path"),
        (WebhookKind.DISCORD, "https://me:AbC-dEf_123@discord.com/api/webhooks/1/x", "user"),
        (WebhookKind.DISCORD, "https://discord.com:8443/api/webhooks/1/AbC-dEf_123", "host"),
        (WebhookKind.DISCORD, "http://127.0.0.1:9/api/webhooks/1/AbC-dEf_123", "--allow-insecure"),
        (WebhookKind.SLACK, DISCORD, "host"),
        (WebhookKind.SLACK, SLACK + "?x=AbC-dEf_123", "query"),
        (WebhookKind.SLACK, "AbC-dEf_123", "scheme"),
    ],
)
def test_invalid_urls_say_why_without_the_secret(kind: WebhookKind, url: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as info:
        validate_url(kind, url)
    assert "AbC-dEf_123" not in str(info.value)


def test_allow_insecure_admits_only_this_machine() -> None:
    local = "http://127.0.0.1:8080/api/webhooks/1/tok"
    assert validate_url(WebhookKind.DISCORD, local, allow_insecure=True) == local
    with pytest.raises(UsageError):
        validate_url(WebhookKind.DISCORD, "http://10.0.0.1/api/webhooks/1/tok", allow_insecure=True)
    with pytest.raises(UsageError, match="path"):
        validate_url(WebhookKind.DISCORD, "http://127.0.0.1:8080/hook", allow_insecure=True)


def test_masking_keeps_the_token_out() -> None:
    assert mask_url("discord", DISCORD) == "https://discord.com/api/webhooks/112233445566778899/***"
    assert mask_url("slack", SLACK) == "https://hooks.slack.com/services/***"
    assert mask_url("slack", "http://127.0.0.1:5/weird/sec") == "http://127.0.0.1:5/***"


def test_discord_body_cannot_ping_or_format(now: datetime) -> None:
    body = discord_body(make_payload(5, now, victim=EVIL, final=EVIL))
    assert body["allowed_mentions"] == {"parse": []}
    texts = [body["content"], *(f["value"] for f in body["embeds"][0]["fields"])]
    for text in texts:
        unescaped = re.sub(r"\\.", "", text)  # drop every backslash-escaped character
        assert not set("@<>[]*_`#") & set(unescaped), text
    assert "\\@everyone" in body["content"]
    assert body["embeds"][0]["url"] == "https://zkillboard.com/kill/5/"
    field_values = " ".join(f["value"] for f in body["embeds"][0]["fields"])
    assert "<@123>" not in field_values and "\\<\\@123\\>" in field_values


def test_slack_body_cannot_mention_or_link(now: datetime) -> None:
    body = slack_body(make_payload(5, now, victim=EVIL))
    assert body["mrkdwn"] is False
    assert "<" not in body["text"] and ">" not in body["text"]
    assert "&lt;@123&gt;" in body["text"]


def test_kill_line_is_verbatim_and_tolerates_missing_names(now: datetime) -> None:
    payload = make_payload(5, now, victim=EVIL)
    assert EVIL in kill_line(payload)
    bare = {
        "killmail_id": 9,
        "victim": {"corporation_id": 98000001, "ship_type_id": 35832},
        "final_blow": {"faction_id": 500010},
        "solar_system_id": 30000142,
    }
    assert kill_line(bare).endswith(
        "#98000001 (type 35832) killed by unknown (unknown ship) in system 30000142  killmail 9"
    )


# -- one POST, through httpx.MockTransport ------------------------------------------------


class Scripted:
    """A transport handler answering from a list, recording each request."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


POLICY = RetryPolicy(attempts=3, backoff_s=0.5, backoff_cap_s=4.0, cooldown_s=60.0)


def _post(handler: Scripted, sleeps: list[float]) -> PostStatus | tuple[PostStatus, object]:
    with make_client(transport=httpx.MockTransport(handler)) as http:
        result = post_message(http, DISCORD, {"content": "x"}, policy=POLICY, sleep=sleeps.append)
    return result.status, result.wait_s


def test_5xx_and_network_errors_are_retried_then_rest() -> None:
    sleeps: list[float] = []
    handler = Scripted(
        httpx.Response(502), httpx.ConnectError("refused " + DISCORD), httpx.Response(204)
    )
    assert _post(handler, sleeps) == (PostStatus.OK, None)
    assert len(handler.requests) == 3 and len(sleeps) == 2 and all(0 < s <= 4 for s in sleeps)
    handler = Scripted(
        httpx.Response(500), httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(500)
    )
    sleeps.clear()
    assert _post(handler, sleeps) == (PostStatus.FAILED, 60.0)
    assert sleeps[1] == 2.0  # the server's hint, within the cap


def test_429_is_not_retried_in_place_and_gives_the_wait() -> None:
    sleeps: list[float] = []
    handler = Scripted(
        httpx.Response(429, json={"retry_after": 1.25}, headers={"Retry-After": "2"})
    )
    assert _post(handler, sleeps) == (PostStatus.RATE_LIMITED, 1.25)
    assert sleeps == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, PostStatus.GONE),
        (401, PostStatus.GONE),
        (403, PostStatus.GONE),
        (410, PostStatus.GONE),
        (400, PostStatus.REJECTED),
        (413, PostStatus.REJECTED),
        (200, PostStatus.OK),
        (204, PostStatus.OK),
    ],
)
def test_classify(status: int, expected: PostStatus) -> None:
    assert classify(httpx.Response(status), POLICY).status is expected


@pytest.mark.parametrize(
    ("headers", "body", "wait"),
    [
        ({"Retry-After": "3"}, None, 3.0),
        ({"X-RateLimit-Reset-After": "0.75"}, None, 0.75),
        ({}, None, 5.0),
        ({}, {"retry_after": 99999}, 900.0),
        ({"Retry-After": "soon"}, {"retry_after": "x"}, 5.0),
    ],
)
def test_retry_after(headers: dict[str, str], body: object, wait: float) -> None:
    response = (
        httpx.Response(429, headers=headers, json=body)
        if body
        else httpx.Response(429, headers=headers)
    )
    assert retry_after_s(response, POLICY) == wait


def test_a_network_error_detail_never_quotes_the_url() -> None:
    handler = Scripted(*[httpx.ConnectError(f"cannot connect to {DISCORD}")] * 3)
    with make_client(transport=httpx.MockTransport(handler)) as http:
        result = post_message(http, DISCORD, {}, policy=POLICY, sleep=lambda s: None)
    assert result.detail == "network error: ConnectError"
