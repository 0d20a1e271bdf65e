"""Root of the `killsync` command: global options, sub-commands, error handling."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from killcli import __version__
from killcli.cli import corporations as corporations_cmds
from killcli.cli import data as data_cmds
from killcli.cli import db as db_cmds
from killcli.cli import deadletters as dead_letters_cmds
from killcli.cli import demo as demo_cmds
from killcli.cli import events as events_cmds
from killcli.cli import kills as kills_cmds
from killcli.cli import ops as ops_cmds
from killcli.cli import prices as prices_cmds
from killcli.cli import secrets as secrets_cmds
from killcli.cli import settings as config_cmds
from killcli.cli import sim as sim_cmds
from killcli.cli import sync as sync_cmds
from killcli.cli import users as users_cmds
from killcli.cli import webhooks as webhooks_cmds
from killcli.cli.context import AppContext, examples
from killcli.config import load_settings
from killcli.console import install_log_handler, make_console
from killcli.errors import ExitCode, KillsyncError
from killcli.textsafe import sanitize

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
app.add_typer(secrets_cmds.app)
app.add_typer(dead_letters_cmds.app)
app.add_typer(corporations_cmds.app)
demo_cmds.register(app)
events_cmds.register(app)
webhooks_cmds.register(app)
ops_cmds.register(app)
users_cmds.register(app)
sync_cmds.register(app)
data_cmds.register(app)
kills_cmds.register(app)
prices_cmds.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"killsync {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL \\[env: KILLSYNC_DATABASE_URL]. With a "
            "password prefer the env var or the config file: `ps` shows flags.",
            show_default=False,
        ),
    ] = None,
    broker_url: Annotated[
        str | None,
        typer.Option(
            "--broker-url",
            help="'database' or amqp:// URL \\[env: KILLSYNC_BROKER_URL]. With "
            "a password prefer the env var or the config file: `ps` shows flags.",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Config file \\[env: KILLSYNC_CONFIG].", show_default=False),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More output.")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and data.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Sync EVE Online killmails of SSO characters from ESI into your own SQL database."""
    environ = dict(os.environ)
    if config is not None:
        environ["KILLSYNC_CONFIG"] = str(config)
    settings = load_settings({"database_url": database_url, "broker_url": broker_url}, environ)
    obj = AppContext(
        settings=settings,
        console=make_console(quiet=False),
        debug=debug,
        verbosity=-1 if quiet else verbose,
    )
    ctx.obj = obj
    ctx.call_on_close(obj.close)


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("KILLSYNC_DEBUG", "") not in ("", "0")


# A full disk, a closed pipe or a broken terminal behind stdout: the data cannot be
# delivered. Reported like an unwritable `--output` file (exit 2), never as a crash. Files
# killsync writes itself wrap their errors; an OSError with these numbers that reaches
# `main` comes from the output streams.
_OUTPUT_ERRNOS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def _flush_stdout() -> None:
    sys.stdout.flush()


def _stdout_flushes() -> bool:
    try:
        _flush_stdout()
    except OSError:
        return False
    return True


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a test's capture object has no fd
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def _fail(console: Console, line: str, code: int, exc: BaseException, *, debug: bool) -> int:
    """One line on stderr (with --debug the traceback first); the exit code unchanged."""
    if debug:  # exception texts may quote ESI: sanitised like every other line
        sys.stderr.write(sanitize("".join(traceback.format_exception(exc)), keep_newlines=True))
    console.print(sanitize(line))
    return code


def _run(args: list[str], console: Console, *, debug: bool) -> int:
    """Run the command; map every way it can end to an exit code."""
    try:
        return _invoke(args, console)
    except KillsyncError as exc:
        return _fail(console, f"killsync: error: {exc}", int(exc.exit_code), exc, debug=debug)
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            return _unexpected(console, exc, debug=debug)
        return _output_failed(console, exc, debug=debug)
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, exit 1
        return _unexpected(console, exc, debug=debug)


def _invoke(args: list[str], console: Console) -> int:
    """The command's own exit code; its output flushed to stdout before it counts."""
    try:
        result = app(args=args, prog_name="killsync", standalone_mode=False)
        _flush_stdout()
    except typer.Exit as exc:
        _flush_stdout()
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: Typer prints usage and the reason
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            console.print(f"killsync: error: {exc.format_message()}")
        return exc.exit_code
    except typer.Abort:
        console.print("killsync: aborted")
        return 130
    except KeyboardInterrupt:
        console.print("killsync: interrupted")
        return 130
    except SystemExit as exc:
        # Click and Rich answer a closed pipe with a silent exit 1 (sys.exit inside their
        # `except BrokenPipeError`): report it like every other unwritable output.
        context = exc.__context__
        if isinstance(context, OSError) and context.errno == errno.EPIPE:
            raise context from None
        raise
    return result if isinstance(result, int) else 0


def _output_failed(console: Console, exc: OSError, *, debug: bool) -> int:
    """stdout (or a file written without its own error) cannot take the data: exit 2."""
    if isinstance(exc, BrokenPipeError) or not _stdout_flushes():  # nobody reads any more
        _silence_stdout()
    return _fail(
        console,
        f"killsync: error: cannot write the output: {exc.strerror or exc}",
        int(ExitCode.USAGE),
        exc,
        debug=debug,
    )


def _unexpected(console: Console, exc: Exception, *, debug: bool) -> int:
    hint = "" if debug else " (run again with --debug for the traceback)"
    return _fail(
        console,
        f"killsync: unexpected error: {type(exc).__name__}: {exc}{hint}",
        int(ExitCode.FAILURE),
        exc,
        debug=debug,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and a named exit code on errors.

    ``--debug`` (or ``KILLSYNC_DEBUG=1``) adds the traceback and keeps the exit code.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args:  # no arguments: the help, and success
        args = ["--help"]
    install_log_handler()
    sys.exit(_run(args, make_console(), debug=_wants_debug(args)))
