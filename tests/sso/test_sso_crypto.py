"""Tokens at rest: Fernet round trip, key rotation, clear errors that never echo a key."""

from __future__ import annotations

import pytest

from killcli.errors import ConfigError, InputError
from killcli.sso import TokenCipher, generate_key


def test_round_trip() -> None:
    cipher = TokenCipher([generate_key()])
    ciphertext = cipher.encrypt("refresh-token-value")
    assert "refresh-token-value" not in ciphertext
    assert cipher.decrypt(ciphertext) == "refresh-token-value"


def test_old_keys_still_decrypt_and_rotate_moves_to_the_newest() -> None:
    old, new = generate_key(), generate_key()
    stored = TokenCipher([old]).encrypt("tok")
    both = TokenCipher([new, old])
    assert both.decrypt(stored) == "tok"
    rotated = both.rotate(stored)
    assert TokenCipher([new]).decrypt(rotated) == "tok"
    with pytest.raises(InputError, match="cannot be decrypted"):
        TokenCipher([old]).decrypt(rotated)


def test_a_bad_key_is_a_config_error_that_names_its_position_not_its_value() -> None:
    bad = "not-a-fernet-key-but-maybe-a-password"
    with pytest.raises(ConfigError) as caught:
        TokenCipher([generate_key(), bad])
    assert "key #2" in str(caught.value)
    assert bad not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_non_ascii_key_and_no_key() -> None:
    with pytest.raises(ConfigError, match="key #1"):
        TokenCipher(["clé"])
    with pytest.raises(ConfigError, match="no encryption key"):
        TokenCipher([])


def test_garbage_ciphertext_is_an_input_error() -> None:
    with pytest.raises(InputError):
        TokenCipher([generate_key()]).decrypt("garbage")
    with pytest.raises(InputError):
        TokenCipher([generate_key()]).rotate("garbage")


def test_repr_hides_keys() -> None:
    key = generate_key()
    assert key not in repr(TokenCipher([key]))


def test_key_index_names_the_key_that_opens_a_value() -> None:
    old, new, other = generate_key(), generate_key(), generate_key()
    both = TokenCipher([new, old])
    assert both.key_count == 2
    assert both.key_index(TokenCipher([new]).encrypt("a")) == 0
    assert both.key_index(TokenCipher([old]).encrypt("a")) == 1
    assert both.key_index(TokenCipher([other]).encrypt("a")) is None
    assert both.key_index("garbage") is None
    assert both.key_index("clé") is None
    assert both.key_index(both.rotate(TokenCipher([old]).encrypt("a"))) == 0


def test_a_bad_key_names_where_it_came_from() -> None:
    from killcli.sso.crypto import check_key

    with pytest.raises(ConfigError, match=r"^secret key file /x/secret\.key: key #3 is not"):
        check_key("hunter2", 3, source="secret key file /x/secret.key")
