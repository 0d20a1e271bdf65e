"""The one place Rich is configured.

Everything but data goes to stderr; markup and emoji are off so that a character or
corporation name such as ``[b]Boss[/b]`` is printed verbatim, never interpreted.

Names and error bodies can also carry terminal controls (ESC, OSC, C1, BEL, CR, bidi
overrides). :class:`SafeConsole` passes every ``str`` Rich renders (``print("...")``, table
cells, titles, live views) through :func:`killcli.textsafe.sanitize` in :meth:`render_str`,
and, as a safety net for text that never was a ``str`` renderable (``rich.text.Text``
built by hand, progress columns), sanitises the text of every segment it renders; the
control sequences Rich itself emits (cursor moves of live displays and progress bars,
styles) are control segments or styles and pass untouched. Progress bars use
:class:`PlainTextColumn`. Log records go through :class:`SafeLogFormatter`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import (
    Console,
    ConsoleOptions,
    HighlighterType,
    JustifyMethod,
    OverflowMethod,
    RenderableType,
)
from rich.progress import TextColumn
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from killcli.textsafe import is_safe, sanitize

if TYPE_CHECKING:
    from rich.progress import Task

PIPE_WIDTH = 160


class SafeConsole(Console):
    """A Rich console that can never write a terminal control taken from data."""

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        """Rich's hook for every ``str`` renderable: sanitised first (the program's own
        newlines kept), then rendered as usual."""
        return super().render_str(
            sanitize(text, keep_newlines=True),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=emoji,
            markup=markup,
            highlight=highlight,
            highlighter=highlighter,
        )

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        """Rich's rendering, with the text of non-control segments sanitised."""
        for segment in super().render(renderable, options):
            if segment.control or is_safe(segment.text, keep_newlines=True):
                yield segment
            else:
                yield Segment(sanitize(segment.text, keep_newlines=True), segment.style)


class PlainTextColumn(TextColumn):
    """A progress-bar text column: no markup, its text sanitised (``TextColumn`` formats
    task fields itself, without going through the console's ``render_str``)."""

    def __init__(self, text_format: str) -> None:
        super().__init__(text_format, markup=False)

    def render(self, task: Task) -> Text:
        """The formatted text, one line, every control replaced visibly."""
        text = sanitize(self.text_format.format(task=task))
        return Text(text, style=self.style, justify=self.justify)


class SafeLogFormatter(logging.Formatter):
    """A log formatter whose lines carry no terminal control (tracebacks keep their
    line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        """The usual formatting, sanitised."""
        return sanitize(super().format(record), keep_newlines=True)


def install_log_handler() -> None:
    """Warnings and errors of the library's loggers on stderr, sanitised (in place of
    Python's raw last-resort handler; nothing changes when logging is configured)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(SafeLogFormatter("%(message)s"))
    root.addHandler(handler)


def make_console(*, stderr: bool = True, quiet: bool = False) -> Console:
    """A console for human output (stderr by default)."""
    stream = sys.stderr if stderr else sys.stdout
    return SafeConsole(
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
