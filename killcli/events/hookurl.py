"""Webhook URLs: what a Discord or Slack webhook URL looks like, and how it is shown.

A webhook URL *is* its credential (``/api/webhooks/<id>/<token>``, ``/services/T/B/<secret>``):
anyone holding it can post. It is stored encrypted, shown masked, and error messages name
at most its scheme and host, never its path.
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import SplitResult, urlsplit

from killcli.errors import UsageError


class WebhookKind(StrEnum):
    DISCORD = "discord"
    SLACK = "slack"


DISCORD_HOSTS = frozenset(
    {"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"}
)
SLACK_HOSTS = frozenset({"hooks.slack.com"})
# --allow-insecure admits plain http to this machine only: simulators and tests.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DISCORD_PATH = re.compile(r"^/api(?:/v\d+)?/webhooks/(\d+)/[A-Za-z0-9_\-.]+/?$")
SLACK_PATH = re.compile(r"^/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+/?$")
SHAPES = {
    WebhookKind.DISCORD: "https://discord.com/api/webhooks/<id>/<token>",
    WebhookKind.SLACK: "https://hooks.slack.com/services/<T...>/<B...>/<secret>",
}


def parse_kind(value: str) -> WebhookKind:
    try:
        return WebhookKind(value.strip().lower())
    except ValueError:
        raise UsageError(f"unknown webhook kind {value!r} (discord or slack)") from None


def _bad(kind: WebhookKind, why: str) -> UsageError:
    return UsageError(f"not a {kind.value} webhook URL: {why}", hint=f"expected {SHAPES[kind]}")


def _split(kind: WebhookKind, url: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise _bad(kind, "malformed URL") from None
    return parts


def _check_origin(kind: WebhookKind, parts: SplitResult, allow_insecure: bool) -> None:
    host = (parts.hostname or "").lower()
    if parts.username or parts.password:
        raise _bad(kind, "user or password in the URL")
    if allow_insecure and host in LOCAL_HOSTS and parts.scheme in {"http", "https"}:
        return
    if parts.scheme != "https":
        hint = " (plain http only to 127.0.0.1 with --allow-insecure)" if host else ""
        raise _bad(kind, f"scheme {parts.scheme or 'none'!r} is not https{hint}")
    hosts = DISCORD_HOSTS if kind is WebhookKind.DISCORD else SLACK_HOSTS
    if host not in hosts or parts.port not in (None, 443):
        raise _bad(kind, f"host {host or 'none'!r} is not {' or '.join(sorted(hosts))}")


def validate_url(kind: WebhookKind, url: str, *, allow_insecure: bool = False) -> str:
    """The URL, stripped, when it has the shape of a ``kind`` webhook; ``UsageError`` else.

    The error names the scheme and host at most: the path holds the webhook's secret.
    """
    parts = _split(kind, url)
    _check_origin(kind, parts, allow_insecure)
    if parts.fragment:
        raise _bad(kind, "a #fragment is not part of a webhook URL")
    shape = DISCORD_PATH if kind is WebhookKind.DISCORD else SLACK_PATH
    if not shape.match(parts.path):
        raise _bad(kind, "the path is not a webhook path")
    if parts.query and kind is WebhookKind.SLACK:
        raise _bad(kind, "Slack webhook URLs take no query string")
    return url.strip()


def mask_url(kind: str, url: str) -> str:
    """Scheme, host and the non-secret part of the path: never the token."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    match = DISCORD_PATH.match(parts.path) if kind == WebhookKind.DISCORD else None
    if match:
        return f"{origin}/api/webhooks/{match.group(1)}/***"
    if kind == WebhookKind.SLACK and parts.path.startswith("/services/"):
        return f"{origin}/services/***"
    return f"{origin}/***"
