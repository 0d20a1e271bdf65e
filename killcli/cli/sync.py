"""`killsync sync-user`: one character in the foreground, for debugging."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer
from rich.table import Table

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.cli.progressview import SyncBars, stamped
from killcli.console import is_interactive, make_console
from killcli.errors import ExitCode
from killcli.esi.ratelimit import WaitEvent
from killcli.runtime import build_runtime
from killcli.sync import SyncOptions, SyncResult
from killcli.sync.progress import ProgressRegistry
from killcli.textsafe import sanitize


def summary_table(result: SyncResult) -> Table:
    f = result.figures
    table = Table(
        title=f"{sanitize(result.character_name)} ({result.character_id}): {result.status}",
        show_header=False,
    )
    rows = [
        ("list pages read", f.pages),
        ("304 not modified", f.not_modified),
        ("killmails listed", f.found),
        ("new", f.new),
        ("already stored", f.already),
        ("bodies fetched", f.fetched),
        ("pending (retried later)", f.pending),
        ("names resolved", f.names_resolved),
        ("ESI tokens spent", ", ".join(f"{k} {v}" for k, v in f.tokens.items()) or "0"),
        ("elapsed", f"{f.elapsed_s:.1f} s"),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def sync_user(
    ctx: typer.Context,
    character_id: Annotated[
        int, typer.Argument(help="The character's id.", parser=params.character_id)
    ],
    full: Annotated[bool, typer.Option("--full", help="Walk every page of the list.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch the list even before its cache expires.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> None:
    """Sync one character now, in the foreground."""
    app_ctx = app_context(ctx)
    show = is_interactive() and not no_progress and not as_json and app_ctx.verbosity >= 0
    # Without bars, a long wait still gets one line (not one per waiting request).
    registry = ProgressRegistry(
        on_notice=None if show or app_ctx.verbosity < 0 else _print_wait(app_ctx)
    )
    with SyncBars(registry, console=app_ctx.console, disable=not show) as bars:
        result = _run(app_ctx, character_id, SyncOptions(full=full, force=force), bars)
    if as_json:
        print_json("sync", json.loads(json.dumps(result.as_dict(), default=str)))
    elif app_ctx.verbosity >= 0:
        make_console(stderr=False).print(summary_table(result))
        for reason in result.pending_reasons[:10]:
            app_ctx.console.print(f"pending: {sanitize(reason)}")
    if result.status == "partial":
        raise typer.Exit(int(ExitCode.PARTIAL))


def _print_wait(app_ctx: AppContext) -> Callable[[WaitEvent], None]:
    def notice(event: WaitEvent) -> None:
        app_ctx.console.print(stamped(event.message))

    return notice


def _run(
    app_ctx: AppContext, character_id: int, options: SyncOptions, bars: SyncBars
) -> SyncResult:
    registry = bars.registry
    runtime = build_runtime(app_ctx.settings, app_ctx.database(), on_wait=registry.waiting)
    registry.attach(runtime.esi.limiter)
    try:
        with registry.track(character_id) as tracker:
            bars.follow(tracker)
            return runtime.engine.sync_character(character_id, options, tracker)
    finally:
        runtime.close()


def register(root: typer.Typer) -> None:
    root.command(
        "sync-user",
        epilog=examples(
            "killsync sync-user 2112345678",
            "killsync sync-user 2112345678 --full --json --no-progress",
        ),
    )(sync_user)
