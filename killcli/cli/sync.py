"""`killsync sync-user` and `sync-corporation`: one list in the foreground."""

from __future__ import annotations

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
from killcli.runtime import Runtime, build_runtime
from killcli.sync import SyncOptions, SyncResult
from killcli.sync.corporation import CorporationSyncResult, sync_corporation
from killcli.sync.progress import ProgressRegistry, SyncTracker
from killcli.textsafe import sanitize

FullFlag = Annotated[bool, typer.Option("--full", help="Walk every page of the list.")]
ForceFlag = Annotated[
    bool, typer.Option("--force", help="Fetch the list even before its cache expires.")
]
RecordFlag = Annotated[bool, typer.Option("--json", help="Print the run record.")]
NoProgressFlag = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]


def summary_table(result: SyncResult | CorporationSyncResult) -> Table:
    f = result.figures
    if isinstance(result, SyncResult):
        name, owner_id = result.character_name, result.character_id
    else:
        name, owner_id = result.corporation_name, result.corporation_id
    table = Table(title=f"{sanitize(name)} ({owner_id}): {result.status}", show_header=False)
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
    if isinstance(result, CorporationSyncResult):
        rows.insert(0, ("directors used", ", ".join(map(str, result.directors_used)) or "-"))
        if result.directors_dropped:
            rows.insert(
                1, ("directors dropped (403)", ", ".join(map(str, result.directors_dropped)))
            )
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def sync_user(
    ctx: typer.Context,
    character_id: Annotated[
        int, typer.Argument(help="The character's id.", parser=params.character_id)
    ],
    full: FullFlag = False,
    force: ForceFlag = False,
    as_json: RecordFlag = False,
    no_progress: NoProgressFlag = False,
) -> None:
    """Sync one character now, in the foreground."""
    app_ctx = app_context(ctx)
    options = SyncOptions(full=full, force=force)
    _foreground(
        app_ctx,
        character_id,
        lambda runtime, tracker: runtime.engine.sync_character(character_id, options, tracker),
        as_json=as_json,
        no_progress=no_progress,
        kind="sync",
    )


def sync_corporation_cmd(
    ctx: typer.Context,
    corporation_id: Annotated[
        int, typer.Argument(help="The corporation's id.", parser=params.corporation_id)
    ],
    full: FullFlag = False,
    force: ForceFlag = False,
    as_json: RecordFlag = False,
    no_progress: NoProgressFlag = False,
) -> None:
    """Sync one tracked corporation now, in the foreground, with its directors' tokens
    (least recently used first; the next one when a bucket runs dry or a role is gone)."""
    app_ctx = app_context(ctx)
    options = SyncOptions(full=full, force=force)
    _foreground(
        app_ctx,
        corporation_id,
        lambda runtime, tracker: sync_corporation(
            runtime.engine, runtime.corporations, corporation_id, options, tracker
        ),
        as_json=as_json,
        no_progress=no_progress,
        kind="sync.corporation",
    )


def _foreground(
    app_ctx: AppContext,
    owner_id: int,
    run: Callable[[Runtime, SyncTracker], SyncResult | CorporationSyncResult],
    *,
    as_json: bool,
    no_progress: bool,
    kind: str,
) -> None:
    """Run one sync with bars (on a terminal), then print its summary or run record."""
    show = is_interactive() and not no_progress and not as_json and app_ctx.verbosity >= 0
    # Without bars, a long wait still gets one line (not one per waiting request).
    registry = ProgressRegistry(
        on_notice=None if show or app_ctx.verbosity < 0 else _print_wait(app_ctx)
    )
    with SyncBars(registry, console=app_ctx.console, disable=not show) as bars:
        result = _run(app_ctx, owner_id, run, bars)
    if as_json:
        print_json(kind, result.as_dict())
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
    app_ctx: AppContext,
    owner_id: int,
    run: Callable[[Runtime, SyncTracker], SyncResult | CorporationSyncResult],
    bars: SyncBars,
) -> SyncResult | CorporationSyncResult:
    registry = bars.registry
    runtime = build_runtime(app_ctx.settings, app_ctx.database(), on_wait=registry.waiting)
    registry.attach(runtime.esi.limiter)
    try:
        with registry.track(owner_id) as tracker:
            bars.follow(tracker)
            return run(runtime, tracker)
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
    root.command(
        "sync-corporation",
        epilog=examples(
            "killsync sync-corporation 98000001",
            "killsync sync-corporation 98000001 --full --json --no-progress",
        ),
    )(sync_corporation_cmd)
