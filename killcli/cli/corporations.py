"""`killsync corporations`: the corporations whose killmails directors' tokens sync."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.cli.params import JsonFlag
from killcli.console import make_console
from killcli.corporations import (
    Corporations,
    DirectorCheckResult,
    list_corporations,
    set_corporation_enabled,
)
from killcli.db.models import DirectorStatus
from killcli.runtime import close_esi, make_accounts, make_esi
from killcli.textsafe import sanitize

app = typer.Typer(
    name="corporations",
    help="Corporations synced through their directors' tokens (tracked when a Director logs "
    "in with `killsync login --corporation`).",
    no_args_is_help=True,
)

CorporationId = Annotated[
    int, typer.Argument(help="The corporation's id.", parser=params.corporation_id)
]


def make_corporations(app_ctx: AppContext) -> Corporations:
    """The corporations service of a command, closed with the command."""
    db = app_ctx.database(create=True)
    accounts = make_accounts(app_ctx.settings, db)
    esi = make_esi(app_ctx.settings, db)
    app_ctx.on_close(accounts.sso.close)
    app_ctx.on_close(lambda: close_esi(esi))
    return Corporations(db, esi, accounts)


def report_checks(app_ctx: AppContext, results: Iterable[DirectorCheckResult]) -> None:
    """One line per director check (stderr)."""
    for r in results:
        where = "-" if r.corporation_id is None else str(r.corporation_id)
        line = f"{r.character_id}: corporation {where}: {r.status}"
        if r.tracked:
            line += ", corporation now tracked"
        if r.reason and r.status != DirectorStatus.USABLE:
            line += f" ({r.reason})"
        elif r.reason:
            line += f" (check failed, retried later: {r.reason})"
        app_ctx.info(sanitize(line))


@app.command(
    "list", epilog=examples("killsync corporations list", "killsync corporations list --json")
)
def list_cmd(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Tracked corporations: status, directors usable/total, last sync, killmails, errors."""
    app_ctx = app_context(ctx)
    infos = list_corporations(app_ctx.database())
    if as_json:
        print_json("corporations", [i.as_dict() for i in infos])
        return
    table = Table("id", "name", "status", "directors", "last sync", "killmails", "last error")
    for i in infos:
        status = "disabled" if not i.enabled else i.status
        if i.enabled and i.status_reason:
            status = f"{status} ({i.status_reason})"
        table.add_row(
            str(i.corporation_id),
            sanitize(i.name or "?"),
            sanitize(status),
            f"{i.directors_usable}/{i.directors_total}",
            "-" if i.last_sync_at is None else str(i.last_sync_at)[:19],
            str(i.killmails),
            sanitize((i.last_error or "")[:60]),
        )
    make_console(stderr=False).print(table)


@app.command("disable", epilog=examples("killsync corporations disable 98000001"))
def disable(ctx: typer.Context, corporation_id: CorporationId) -> None:
    """Stop syncing a corporation (its killmails and directors stay; `enable` resumes)."""
    app_ctx = app_context(ctx)
    name = set_corporation_enabled(app_ctx.database(), corporation_id, enabled=False)
    app_ctx.info(f"disabled {sanitize(name)} ({corporation_id})")


@app.command("enable", epilog=examples("killsync corporations enable 98000001"))
def enable(ctx: typer.Context, corporation_id: CorporationId) -> None:
    """Resume syncing a disabled corporation."""
    app_ctx = app_context(ctx)
    name = set_corporation_enabled(app_ctx.database(), corporation_id, enabled=True)
    app_ctx.info(f"enabled {sanitize(name)} ({corporation_id})")


@app.command(
    "check",
    epilog=examples("killsync corporations check", "killsync corporations check --json"),
)
def check(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Re-check the directors whose roles answer expired (an hour; a day after "not in
    the corporation"): their corporation, whether they are Directors there."""
    app_ctx = app_context(ctx)
    results = make_corporations(app_ctx).check_due()
    if as_json:
        print_json("corporations.check", [r.as_dict() for r in results])
    else:
        report_checks(app_ctx, results)
        app_ctx.info(f"{len(results)} director(s) checked")
