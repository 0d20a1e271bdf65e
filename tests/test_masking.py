"""URLs never leak their secrets into messages or `config show` (issue 10, finding 6)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from killcli.errors import QueueUnavailable
from killcli.queue.rabbit_topology import connect
from killcli.textsafe import mask_url
from tests.conftest import CliResult

SECRET = "S3cr3tPw"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://bob:S3cr3tPw@db:5432/k", "postgresql+psycopg://bob:***@db:5432/k"),
        ("amqp://guest:S3cr3tPw@localhost:5672/%2F", "amqp://guest:***@localhost:5672/%2F"),
        ("postgresql://:S3cr3tPw@db/k", "postgresql://:***@db/k"),
        ("postgresql://bob:S3:cr3t@Pw@db/k", "postgresql://bob:***@db/k"),  # ':' and '@' in it
        (
            "postgresql://db/k?password=S3cr3tPw&application_name=x",
            "postgresql://db/k?password=***&application_name=x",
        ),
        (
            "postgresql://bob@db/k?sslpassword=S3cr3tPw;sslkey=/k.pem",
            "postgresql://bob@db/k?sslpassword=***;sslkey=***",
        ),
        (
            "https://esi.example/?access_token=S3cr3tPw&client_secret=S3cr3tPw&Api-Key=S3cr3tPw",
            "https://esi.example/?access_token=***&client_secret=***&Api-Key=***",
        ),
        ("amqp://u@h/?pass%77ord=S3cr3tPw", "amqp://u@h/?pass%77ord=***"),  # encoded name
        # malformed: no '://', no scheme, '/', '?' or '@' typed into the password
        ("postgresql//bob:S3cr3tPw@db/k", "postgresql//bob:***@db/k"),
        ("bob:S3cr3tPw@db/k", "bob:***@db/k"),
        ("amqp://bob:S3c/r3tPw@host/v", "amqp://bob:***@host/v"),
        ("amqp://bob:12/S3cr3tPw@host", "amqp://bob:***@host"),
        ("amqp://bob:S3c?r3tPw@host", "amqp://bob:***@host"),
        ("postgresql://db:5432/k?password=S3c@r3tPw", "postgresql://db:***"),  # over-masks
        # nothing to hide
        ("postgresql://bob@db/k", "postgresql://bob@db/k"),
        ("sqlite:////srv/a@b/killsync.db", "sqlite:////srv/a@b/killsync.db"),
        ("database", "database"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    for part in ("S3cr3tPw", "S3cr3t", "r3tPw", "S3c"):
        assert part not in mask_url(url)


@pytest.mark.parametrize("key", ["KILLSYNC_DATABASE_URL", "KILLSYNC_BROKER_URL"])
def test_config_show_masks_query_and_userinfo_passwords(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    url = (
        "postgresql+psycopg://bob:S3cr3tPw@db/k?password=S3cr3tPw"
        if "DATABASE" in key
        else "amqp://bob:S3cr3tPw@mq/v?heartbeat=30&password=S3cr3tPw"
    )
    monkeypatch.setenv(key, url)
    shown = cli("config", "show")
    as_json = cli("config", "show", "--json")
    assert shown.exit_code == as_json.exit_code == 0, shown.stderr
    assert SECRET not in shown.stdout + shown.stderr + as_json.stdout
    assert ":***@" in shown.stdout and "password=***" in shown.stdout
    rows = {r["env"]: r["value"] for r in json.loads(as_json.stdout)["data"]["settings"]}
    assert rows[key] == mask_url(url)


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("KILLSYNC_DATABASE_URL", "postgresql//bob:S3cr3tPw@db/k"),
        ("KILLSYNC_DATABASE_URL", "postgresql://bob:S3cr3tPw@db:port/k"),
        ("KILLSYNC_DATABASE_URL", "bob:S3cr3tPw@db"),
        ("KILLSYNC_BROKER_URL", "amqp//bob:S3cr3tPw@mq/v"),
        ("KILLSYNC_BROKER_URL", "amqp://bob:12/S3cr3tPw@mq"),
        ("KILLSYNC_BROKER_URL", "amqp://bob:S3cr3tPw@mq:99999/v"),
        ("KILLSYNC_ESI_BASE_URL", "https//bob:S3cr3tPw@esi"),
    ],
)
def test_a_mistyped_url_is_rejected_without_its_password(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, key: str, url: str
) -> None:
    monkeypatch.setenv(key, url)
    result = cli("config", "show")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"killsync: error: {key}: ")
    assert "***" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_an_unreachable_database_is_reported_without_the_password(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "KILLSYNC_DATABASE_URL",
        "postgresql+psycopg://bob:S3cr3tPw@127.0.0.1:1/k?sslpassword=S3cr3tPw",
    )
    result = cli("users", "list")
    assert result.exit_code == 6, result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_an_unreachable_broker_is_reported_without_the_password(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("db", "upgrade").exit_code == 0
    monkeypatch.setenv("KILLSYNC_BROKER_URL", "amqp://bob:S3cr3tPw@127.0.0.1:1/%2F")
    result = cli("queue")
    assert result.exit_code == 7, result.stderr
    assert "RabbitMQ" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    ["amqp://bob:S3cr3tPw@127.0.0.1:1/%2F", "amqp://bob:S3cr3tPw@127.0.0.1:1/?password=S3cr3tPw"],
)
def test_rabbitmq_connection_errors_mask_the_url(url: str) -> None:
    with pytest.raises(QueueUnavailable) as caught:
        connect(url, name="killsync-test")
    assert "amqp://bob:***@127.0.0.1:1/" in str(caught.value)
    assert SECRET not in str(caught.value)
