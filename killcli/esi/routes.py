"""Route templates, the rate-limit groups we know before ESI tells us, and bucket owners.

ESI names a route's group in ``X-Ratelimit-Group`` on every response; the limiter learns
from that. For the killmail routes we also know the group up front, so the very first
request already goes through the right bucket. The table below is transcribed from the
``x-rate-limit`` extension of CCP's OpenAPI document (compatibility date 2026-08-18); a
test checks it against that extension (``tests/data/openapi``).
"""

from __future__ import annotations

import re
from types import MappingProxyType

import jwt

_ID_SEGMENT = re.compile(r"^\d+$")
_HASH_SEGMENT = re.compile(r"^[0-9a-fA-F]{32,}$")
_SUBJECT = re.compile(r"^CHARACTER:EVE:(\d+)$")

ROUTE_GROUP_HINTS: MappingProxyType[str, str] = MappingProxyType(
    {
        "/characters/{id}/killmails/recent": "char-killmail",
        "/corporations/{id}/killmails/recent": "corp-killmail",
        "/killmails/{id}/{hash}": "killmail",
    }
)


def route_of(path: str) -> str:
    """The template of a concrete path: ``/killmails/1/ab12...`` -> ``/killmails/{id}/{hash}``.

    Numeric segments become ``{id}`` and long hex segments ``{hash}``, so every killmail URL
    shares one entry in the learned route -> group table.
    """
    segments = []
    for segment in path.split("?", 1)[0].rstrip("/").split("/"):
        if _ID_SEGMENT.match(segment):
            segments.append("{id}")
        elif _HASH_SEGMENT.match(segment):
            segments.append("{hash}")
        else:
            segments.append(segment)
    return "/".join(segments) or "/"


def character_of(access_token: str) -> int | None:
    """The character an access token was issued for, read from its ``sub`` claim.

    Only used to key the character's rate-limit bucket, never to authorise anything, so the
    signature is not checked here (the SSO layer validates tokens). ``None`` when the token
    is not a readable EVE JWT: the request then shares the application-wide bucket, which
    errs on the side of spending less.
    """
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    match = _SUBJECT.match(str(claims.get("sub", "")))
    return int(match.group(1)) if match else None
