"""The token file format of `killsync users import` (killcli/tokenfile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from killcli.errors import InputError
from killcli.tokenfile import TokenLine, parse_token_file, read_secret


def test_lines_json_lines_comments_and_bad_lines_keep_their_numbers() -> None:
    text = (
        "# exported 2026-11-30\n"
        "tok-one\n"
        "\n"
        '  {"refresh_token": "tok-two", "character_id": 1}\n'
        '{"character_id": 2}\n'
        "{not json\n"
        "  tok-three  \n"
    )
    assert parse_token_file(text) == [
        TokenLine(2, "tok-one"),
        TokenLine(4, "tok-two"),
        TokenLine(5, ""),  # no refresh_token: rejected with its line number
        TokenLine(6, ""),
        TokenLine(7, "tok-three"),
    ]


def test_a_byte_order_mark_is_dropped_and_binary_is_one_clear_error(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\ufefftok-one\n", encoding="utf-8")
    assert read_secret(str(tokens)) == "tok-one\n"
    tokens.write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputError, match="not text"):
        read_secret(str(tokens))
    with pytest.raises(InputError, match="cannot read"):
        read_secret(str(tmp_path / "missing.txt"))
