"""Encrypting refresh tokens at rest with Fernet keys that can be rotated.

Keys are given newest first: the first encrypts, all of them decrypt. To rotate, put a new
key in front, run :meth:`TokenCipher.rotate` over the stored ciphertexts, then drop the
old key. Error messages name a key by its position, never by its value.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from killcli.errors import ConfigError, InputError


def generate_key() -> str:
    """A new random Fernet key (URL-safe base64 text)."""
    return Fernet.generate_key().decode("ascii")


def _fernet(key: str, position: int) -> Fernet:
    try:
        return Fernet(key.strip().encode("ascii"))
    except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError too
        # `from None`: the chained error must not carry any part of the key along.
        raise ConfigError(
            f"KILLSYNC_SECRET_KEY: key #{position} is not a Fernet key "
            "(32 bytes in URL-safe base64)"
        ) from None


class TokenCipher:
    """Encrypt and decrypt token strings with a newest-first list of Fernet keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("KILLSYNC_SECRET_KEY: no encryption key configured")
        self._fernet = MultiFernet([_fernet(key, n) for n, key in enumerate(keys, start=1)])

    def __repr__(self) -> str:
        return "TokenCipher(<keys hidden>)"

    def encrypt(self, plaintext: str) -> str:
        """Ciphertext (URL-safe text) of ``plaintext`` under the newest key."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext; ``InputError`` if no configured key opens it."""
        return self._open(self._fernet.decrypt, ciphertext).decode("utf-8")

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt ``ciphertext`` under the newest key (after a key rotation)."""
        return self._open(self._fernet.rotate, ciphertext).decode("ascii")

    @staticmethod
    def _open(operation: Callable[[bytes], bytes], ciphertext: str) -> bytes:
        try:
            return operation(ciphertext.encode("ascii"))
        except (InvalidToken, UnicodeError):
            raise InputError(
                "a stored token cannot be decrypted with the configured secret key(s)",
                hint="keep old keys in KILLSYNC_SECRET_KEY, after the new one, until every "
                     "token is rotated",
            ) from None
