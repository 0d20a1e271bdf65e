"""Refresh tokens handed to killsync: where they are read from and how a file lists them.

A token is a secret, so it comes from stdin (``-``) or a file, never from argv (where
`ps` shows it). A token file (``killsync users import``) holds one refresh token per line,
or JSON lines with a ``refresh_token`` field (another system's export); blank lines and
``#`` comments are skipped, and a line that is neither is kept, empty, so that it is
rejected with its line number.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from killcli.errors import InputError

MAX_TOKEN_INPUT_CHARS = 16 << 20  # ~100,000 tokens; `users import /dev/zero` must end


@dataclass(frozen=True)
class TokenLine:
    """One token of a token file and the line it came from (for error messages)."""

    line: int
    token: str


def read_secret(source: str) -> str:
    """The text at ``source`` (``-``: stdin), checked to be bounded, printable text."""
    name = "stdin" if source == "-" else source
    try:
        text = _read_text(source, MAX_TOKEN_INPUT_CHARS + 1)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not text (refresh tokens are lines of ASCII)") from exc
    if len(text) > MAX_TOKEN_INPUT_CHARS:
        raise InputError(f"{name}: larger than {MAX_TOKEN_INPUT_CHARS} characters")
    text = text.removeprefix("\ufeff")  # a byte-order mark from a Windows editor
    if not all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        raise InputError(f"{name}: not text (refresh tokens are lines of ASCII)")
    return text


def _read_text(source: str, limit: int) -> str:
    if source == "-":
        return sys.stdin.read(limit)
    with Path(source).open(encoding="utf-8") as fh:
        return fh.read(limit)


def parse_token_file(text: str) -> list[TokenLine]:
    """The tokens of a token file, in order, with their line numbers."""
    tokens = []
    for number, raw in enumerate(text.splitlines(), start=1):
        token = raw.strip()
        if not token or token.startswith("#"):
            continue
        if token.startswith("{"):
            try:
                token = str(json.loads(token)["refresh_token"])
            except (ValueError, KeyError, TypeError):
                token = ""  # rejected by the caller, with its line number
        tokens.append(TokenLine(number, token))
    return tokens
