"""Root of the `killsync` command: global options, sub-commands, error handling."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from killcli import __version__
from killcli.cli import data as data_cmds
from killcli.cli import db as db_cmds
from killcli.cli import demo as demo_cmds
from killcli.cli import events as events_cmds
from killcli.cli import ops as ops_cmds
from killcli.cli import settings as config_cmds
from killcli.cli import sim as sim_cmds
from killcli.cli import sync as sync_cmds
from killcli.cli import users as users_cmds
from killcli.cli.context import AppContext, examples
from killcli.config import load_settings
from killcli.console import make_console
from killcli.errors import ExitCode, KillsyncError

app = typer.Typer(
    name="killsync",
    help="Sync EVE Online killmails of SSO characters from ESI into your own SQL database.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=examples("killsync demo", "killsync login", "killsync queue && killsync worker --drain"),
)
app.add_typer(db_cmds.app)
app.add_typer(config_cmds.app)
app.add_typer(sim_cmds.app)
demo_cmds.register(app)
events_cmds.register(app)
ops_cmds.register(app)
users_cmds.register(app)
sync_cmds.register(app)
data_cmds.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"killsync {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="SQLAlchemy URL \\[env: KILLSYNC_DATABASE_URL].",
        show_default=False)] = None,
    broker_url: Annotated[str | None, typer.Option(
        "--broker-url", help="'database' or amqp:// URL \\[env: KILLSYNC_BROKER_URL].",
        show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Config file \\[env: KILLSYNC_CONFIG].", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True,
                                         help="More output.")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and data.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Sync EVE Online killmails of SSO characters from ESI into your own SQL database."""
    environ = dict(os.environ)
    if config is not None:
        environ["KILLSYNC_CONFIG"] = str(config)
    settings = load_settings({"database_url": database_url, "broker_url": broker_url}, environ)
    obj = AppContext(settings=settings, console=make_console(quiet=False), debug=debug,
                     verbosity=-1 if quiet else verbose)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("KILLSYNC_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and a named exit code on errors."""
    args = sys.argv[1:] if argv is None else argv
    if not args:  # no arguments: the help, and success
        args = ["--help"]
    console = make_console()
    try:
        result = app(args=args, prog_name="killsync", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: Typer prints usage and the reason
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            console.print(f"killsync: error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("killsync: aborted")
        sys.exit(130)
    except KillsyncError as exc:
        if _wants_debug(args):
            raise
        console.print(f"killsync: error: {exc}")
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        console.print("killsync: interrupted")
        sys.exit(130)
    except Exception as exc:
        if _wants_debug(args):
            raise
        console.print(f"killsync: unexpected error: {type(exc).__name__}: {exc} "
                      "(run again with --debug for the traceback)")
        sys.exit(int(ExitCode.FAILURE))
    sys.exit(result if isinstance(result, int) else 0)
