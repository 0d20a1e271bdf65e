"""The one place Rich is configured.

Everything but data goes to stderr; markup and emoji are off so that a character or
corporation name such as ``[b]Boss[/b]`` is printed verbatim, never interpreted.
"""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 160


def make_console(*, stderr: bool = True, quiet: bool = False) -> Console:
    """A console for human output (stderr by default)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(
        stderr=stderr,
        # Piped or under cron there is no terminal width: do not squeeze tables to 80.
        width=None if stream.isatty() else PIPE_WIDTH,
        markup=False,
        emoji=False,
        highlight=False,
        quiet=quiet,
        soft_wrap=True,  # one message, one line: never wrap at the terminal width
    )


def is_interactive() -> bool:
    """True when a person is watching stderr (progress bars make sense)."""
    return sys.stderr.isatty()
