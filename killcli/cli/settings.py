"""`killsync config`: where settings come from."""

from __future__ import annotations

import typer

from killcli.cli.context import app_context, examples, print_json
from killcli.cli.params import JsonFlag
from killcli.config import settings_report

app = typer.Typer(name="config", help="Show the settings in effect.", no_args_is_help=True)


@app.command("show", epilog=examples("killsync config show", "killsync config show --json"))
def show(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every setting, its value (secrets masked) and where it came from."""
    settings = app_context(ctx).settings
    report = settings_report(settings)
    if as_json:
        print_json("config", report)
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table("setting", "value", "source", title=f"config file: {settings.config_file}")
    for row in report["settings"]:
        table.add_row(row["env"], row["value"], row["source"])
    from killcli.console import make_console  # noqa: PLC0415

    make_console(stderr=False).print(table)


@app.command("path", epilog=examples("killsync config path"))
def path(ctx: typer.Context) -> None:
    """Print the config file path and the data directory."""
    settings = app_context(ctx).settings
    typer.echo(f"config file: {settings.config_file}")
    typer.echo(f"data directory: {settings.home}")
