"""Text from outside, made safe to show: the one terminal sanitiser and the one URL mask.

Names, tickers, ESI and SSO error bodies, reasons and ``last_error`` come from ESI, the SSO
or a proxy in between, and may hold anything. Before any of it reaches a person (terminal,
log line, webhook message) it goes through :func:`sanitize`, which replaces every character
that could drive a terminal or reorder text **visibly**, by one rule:

=====================================================  ==========================================
C0 controls U+0000-U+001F (ESC, BEL, CR, LF, TAB ...)  the control picture U+2400 + code:
                                                       ESC -> ``␛``, BEL -> ``␇``, CR -> ``␍``
DEL U+007F                                             ``␡`` (U+2421)
C1 controls U+0080-U+009F (8-bit CSI, OSC ...)         a ``\\u009b``-style escape (6 characters)
bidi controls U+061C, U+200E, U+200F, U+202A-U+202E,   a ``\\u202e``-style escape
U+2066-U+2069; line/paragraph separators U+2028,
U+2029; lone surrogates U+D800-U+DFFF
=====================================================  ==========================================

A newline is kept only where the program itself writes one (``keep_newlines=True``, used by
the console for whole messages); a name or an error body never spans lines. ``--json``
output is not sanitised: it is exact JSON, but :func:`dumps_for_terminal` writes the
characters of the last two rows (which JSON allows raw) as ``\\uXXXX`` escapes, so the
decoded strings are the originals and a terminal showing the JSON is not driven by them.

:func:`mask_url` hides the password of a URL's userinfo and the values of query parameters
named like secrets, even in URLs too malformed to parse (``postgresql//bob:pw@db/k``).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any
from urllib.parse import unquote

#: C0 controls (LF handled apart), DEL, C1 controls, bidi controls, separators, surrogates.
_UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_OR_NEWLINE = re.compile(f"{_UNSAFE.pattern}|\n")
#: What JSON may carry raw but a terminal must not receive.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_CONTROL_PICTURES = 0x2400
_DEL_PICTURE = "\u2421"
MASK = "***"
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)
_QUERY_PAIR = re.compile(r"[?&;]([^=&;#]*)=([^&;#]*)")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(_CONTROL_PICTURES + code)
    if code == 0x7F:
        return _DEL_PICTURE
    return f"\\u{code:04x}"


def sanitize(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every terminal control and bidi control replaced visibly (see the
    module docstring); newlines too unless ``keep_newlines`` (the program's own lines)."""
    pattern = _UNSAFE if keep_newlines else _UNSAFE_OR_NEWLINE
    return pattern.sub(_visible, text)


def is_safe(text: str, *, keep_newlines: bool = False) -> bool:
    """True when :func:`sanitize` would leave ``text`` unchanged."""
    pattern = _UNSAFE if keep_newlines else _UNSAFE_OR_NEWLINE
    return pattern.search(text) is None


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps_for_terminal(data: Any, **kwargs: Any) -> str:
    """``json.dumps(data, ensure_ascii=False, **kwargs)``, with the characters JSON allows
    raw but a terminal must not get (DEL, C1, bidi, separators, lone surrogates) written as
    ``\\uXXXX``: still exact JSON, decoding to the very same strings."""
    text = json.dumps(data, ensure_ascii=False, **kwargs)
    # Outside strings JSON is ASCII punctuation, so every match is inside a string.
    return _RAW_IN_JSON.sub(_json_escape, text)


# -- URLs --------------------------------------------------------------------------------


def _userinfo_span(url: str) -> tuple[int, int] | None:
    """The password part of the userinfo: after the first ``:`` past the scheme, up to the
    last ``@`` (works without ``://``, with a ``/``, ``?`` or ``@`` typed in the password)."""
    at = url.rfind("@")
    if at < 0:
        return None
    scheme_end = url.find("://")
    start = scheme_end + 3 if 0 <= scheme_end < at else 0
    colon = url.find(":", start, at)
    return None if colon < 0 else (colon + 1, at)


def _secret_param_spans(url: str) -> list[tuple[int, int]]:
    """The values of query parameters whose name looks like a secret."""
    return [
        match.span(2)
        for match in _QUERY_PAIR.finditer(url)
        if _SECRET_NAME.search(unquote(match.group(1)))
    ]


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each run of characters covered by ``spans`` replaced by :data:`MASK`."""
    hidden = [False] * len(text)
    for start, end in spans:
        hidden[start:end] = [True] * (end - start)
    runs = itertools.groupby(zip(text, hidden, strict=True), key=lambda pair: pair[1])
    return "".join(MASK if masked else "".join(ch for ch, _ in run) for masked, run in runs)


def mask_url(url: str) -> str:
    """``url`` fit for messages and ``config show``: its userinfo password and the values of
    query parameters named like password/secret/token/key/pass replaced by ``***``.

    Malformed URLs are masked too (over-masking rather than leaking): both rules run on the
    raw text, and their spans are merged.
    """
    spans = _secret_param_spans(url)
    userinfo = _userinfo_span(url)
    if userinfo is not None:
        spans.append(userinfo)
    return _blank(url, [span for span in spans if span[1] > span[0]])
