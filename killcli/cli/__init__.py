"""The `killsync` command line: parse, call one service, render."""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """A flag (``--json``) or counter (``-v``) takes no value: show no type for it.

    Typer's help prints every option's type, flags included (``--json <bool>``), which
    reads as if the flag wanted a value; this is the one place that says otherwise.
    """
    if self.metavar is None and (self.is_flag or self.count):
        return None
    return _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]
