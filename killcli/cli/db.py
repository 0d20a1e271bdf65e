"""`killsync db`: schema migrations."""

from __future__ import annotations

import typer

from killcli.cli.context import app_context, examples, print_json
from killcli.cli.params import JsonFlag

app = typer.Typer(name="db", help="Create or migrate the database schema.", no_args_is_help=True)


@app.command(
    "upgrade",
    epilog=examples(
        "killsync db upgrade",
        "KILLSYNC_DATABASE_URL=postgresql://killsync@db/killsync killsync db upgrade",
    ),
)
def upgrade(ctx: typer.Context) -> None:
    """Migrate the database to the newest schema (safe to run again)."""
    app_ctx = app_context(ctx)
    before, after = app_ctx.database(check_schema=False, create=True).upgrade()
    if before == after:
        app_ctx.info(f"database schema is up to date ({after})")
    else:
        app_ctx.info(f"database schema upgraded: {before or 'empty'} -> {after}")


@app.command("status", epilog=examples("killsync db status", "killsync db status --json"))
def status(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """Show the schema version of the database and the one this killsync needs."""
    db = app_context(ctx).database(check_schema=False)
    schema = db.schema_status()
    if as_json:
        print_json("db.status", schema.as_dict())
        return
    state = (
        "up to date"
        if schema.up_to_date
        else "out of date: run `killsync db upgrade`"
        if schema.known
        else "newer than this killsync: upgrade killsync"
    )
    typer.echo(f"schema {schema.current or 'none'} (needs {schema.head}): {state}")
