"""`killsync sync-user`: one character in the foreground, for debugging."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.console import PlainTextColumn, is_interactive, make_console
from killcli.errors import ExitCode
from killcli.esi.ratelimit import WaitEvent
from killcli.runtime import build_runtime
from killcli.sync import SyncOptions, SyncResult
from killcli.textsafe import sanitize


class _Bars:
    """Rich progress for pages and bodies, with the rate-limit wait as its description."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.page_task: TaskID = progress.add_task("list pages", total=None)
        self.body_task: TaskID = progress.add_task("killmail bodies", total=None)

    def pages(self, read: int, total: int) -> None:
        self.progress.update(self.page_task, completed=read, total=total)

    def bodies(self, done: int, total: int) -> None:
        self.progress.update(self.body_task, completed=done, total=total,
                             description="killmail bodies")

    def waiting(self, event: WaitEvent) -> None:
        self.progress.update(self.body_task, description=event.message)


def summary_table(result: SyncResult) -> Table:
    f = result.figures
    table = Table(title=f"{sanitize(result.character_name)} ({result.character_id}): "
                        f"{result.status}",
                  show_header=False)
    rows = [("list pages read", f.pages), ("304 not modified", f.not_modified),
            ("killmails listed", f.found), ("new", f.new), ("already stored", f.already),
            ("bodies fetched", f.fetched), ("pending (retried later)", f.pending),
            ("names resolved", f.names_resolved),
            ("ESI tokens spent", ", ".join(f"{k} {v}" for k, v in f.tokens.items()) or "0"),
            ("elapsed", f"{f.elapsed_s:.1f} s")]
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def sync_user(
    ctx: typer.Context,
    character_id: Annotated[int, typer.Argument(help="The character's id.",
                                                parser=params.character_id)],
    full: Annotated[bool, typer.Option("--full", help="Walk every page of the list.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Fetch the list even before its "
                                        "cache expires.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")
                           ] = False,
) -> None:
    """Sync one character now, in the foreground."""
    app_ctx = app_context(ctx)
    show = is_interactive() and not no_progress and not as_json and app_ctx.verbosity >= 0
    columns = (PlainTextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=app_ctx.console, disable=not show) as progress:
        bars = _Bars(progress)
        result = _run(app_ctx, character_id, SyncOptions(full=full, force=force), bars)
    if as_json:
        print_json("sync", json.loads(json.dumps(result.as_dict(), default=str)))
    elif app_ctx.verbosity >= 0:
        make_console(stderr=False).print(summary_table(result))
        for reason in result.pending_reasons[:10]:
            app_ctx.console.print(f"pending: {sanitize(reason)}")
    if result.status == "partial":
        raise typer.Exit(int(ExitCode.PARTIAL))


def _run(app_ctx: AppContext, character_id: int, options: SyncOptions, bars: _Bars
         ) -> SyncResult:
    runtime = build_runtime(app_ctx.settings, app_ctx.database(), on_wait=bars.waiting)
    try:
        return runtime.engine.sync_character(character_id, options, bars)
    finally:
        runtime.close()


def register(root: typer.Typer) -> None:
    root.command("sync-user", epilog=examples(
        "killsync sync-user 2112345678",
        "killsync sync-user 2112345678 --full --json --no-progress",
    ))(sync_user)
