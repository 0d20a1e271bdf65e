"""Encrypting refresh tokens at rest with Fernet keys that can be rotated.

Keys are given newest first: the first encrypts, all of them decrypt. To rotate, put a new
key in front and run ``killsync secrets rotate`` (:func:`killcli.secrets.rotate_secrets`,
which calls :meth:`TokenCipher.rotate` on every stored value), then drop the old key once
``killsync secrets status`` shows every value under key #1. Error messages name a key by its
position, never by its value.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from killcli.errors import ConfigError, InputError

KEY_SETTING = "KILLSYNC_SECRET_KEY"


def generate_key() -> str:
    """A new random Fernet key (URL-safe base64 text)."""
    return Fernet.generate_key().decode("ascii")


def check_key(key: str, position: int, *, source: str = KEY_SETTING) -> Fernet:
    """The Fernet of ``key``; ``ConfigError`` naming ``source`` and the key's position."""
    try:
        return Fernet(key.strip().encode("ascii"))
    except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError too
        # `from None`: the chained error must not carry any part of the key along.
        raise ConfigError(
            f"{source}: key #{position} is not a Fernet key (32 bytes in URL-safe base64)"
        ) from None


class TokenCipher:
    """Encrypt and decrypt token strings with a newest-first list of Fernet keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError(f"{KEY_SETTING}: no encryption key configured")
        self._fernets = [check_key(key, n) for n, key in enumerate(keys, start=1)]
        self._fernet = MultiFernet(self._fernets)

    def __repr__(self) -> str:
        return "TokenCipher(<keys hidden>)"

    @property
    def key_count(self) -> int:
        """How many keys are configured (key #1 is the one that encrypts)."""
        return len(self._fernets)

    def encrypt(self, plaintext: str) -> str:
        """Ciphertext (URL-safe text) of ``plaintext`` under the newest key."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext; ``InputError`` if no configured key opens it."""
        return self._open(self._fernet.decrypt, ciphertext).decode("utf-8")

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt ``ciphertext`` under the newest key (after a key rotation)."""
        return self._open(self._fernet.rotate, ciphertext).decode("ascii")

    def key_index(self, ciphertext: str) -> int | None:
        """Position (0 = the newest key) of the first key that opens it; None if none does."""
        try:
            token = ciphertext.encode("ascii")
        except UnicodeError:
            return None
        for index, fernet in enumerate(self._fernets):
            try:
                fernet.decrypt(token)
            except InvalidToken:
                continue
            return index
        return None

    @staticmethod
    def _open(operation: Callable[[bytes], bytes], ciphertext: str) -> bytes:
        try:
            return operation(ciphertext.encode("ascii"))
        except (InvalidToken, UnicodeError):
            raise InputError(
                "a stored token cannot be decrypted with the configured secret key(s)",
                hint="keep old keys in KILLSYNC_SECRET_KEY, after the new one, until "
                "`killsync secrets rotate` has re-encrypted every value",
            ) from None
