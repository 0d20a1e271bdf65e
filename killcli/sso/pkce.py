"""PKCE (RFC 7636, method S256) for the native-app login flow."""

from __future__ import annotations

import base64
import hashlib
import secrets


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def challenge_of(verifier: str) -> str:
    """The S256 challenge of a verifier: ``BASE64URL(SHA256(verifier))`` without padding."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def make_pkce() -> tuple[str, str]:
    """A fresh ``(verifier, challenge)`` pair; the verifier is 86 URL-safe characters."""
    verifier = _b64url(secrets.token_bytes(64))
    return verifier, challenge_of(verifier)
