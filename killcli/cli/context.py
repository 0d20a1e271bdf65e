"""The application object every command receives through ``ctx.obj``.

Built once by the root callback; resources (database, clients) are opened on first use
and closed when the command ends. There is no module-level state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console

from killcli.config import Settings
from killcli.db import Database
from killcli.textsafe import dumps_for_terminal

JSON_SCHEMA_VERSION = 1


@dataclass
class AppContext:
    settings: Settings
    console: Console
    debug: bool = False
    verbosity: int = 0
    _db: Database | None = field(default=None, repr=False)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def database(self, *, check_schema: bool = True, create: bool = False) -> Database:
        """The process's database, its schema checked.

        Only commands that bring data in pass ``create=True``: they may create a missing
        SQLite file (and its directory) and its schema. Every other command reports
        ``no database at PATH`` (exit 6) instead of leaving an empty database behind.
        """
        if self._db is None:
            self._db = Database(self.settings.database_url, create=create)
            self._closers.append(self._db.close)
            if check_schema:
                self._db.ensure_schema(create=create)
        return self._db

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()

    def info(self, message: str) -> None:
        """A human message on stderr (hidden by --quiet)."""
        if self.verbosity >= 0:
            self.console.print(message)

    def detail(self, message: str) -> None:
        """A message shown only with -v."""
        if self.verbosity > 0:
            self.console.print(message)


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext), "root callback did not run"
    return obj


def print_json(kind: str, data: Any) -> None:
    """The versioned ``--json`` envelope, on stdout."""
    envelope = {"kind": kind, "version": JSON_SCHEMA_VERSION, "data": data}
    sys.stdout.write(dumps_for_terminal(envelope, default=str, indent=2) + "\n")


def examples(*lines: str) -> str:
    """The ``Examples:`` epilog every command's help ends with."""
    body = "\n\n".join(f"  $ {line}" for line in lines)
    return f"Examples:\n\n{body}"
