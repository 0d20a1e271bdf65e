"""`killsync users`, `login` and `refresh-token`: the characters killsync syncs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress
from rich.table import Table

from killcli.accounts import (
    CORPORATION_LOGIN_SCOPES,
    DEFAULT_SCOPES,
    Accounts,
    AddResult,
    info_as_dict,
    list_characters,
    remove_character,
    set_enabled,
)
from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.cli.corporations import make_corporations, report_checks
from killcli.cli.params import JsonFlag
from killcli.console import PlainTextColumn, is_interactive, make_console
from killcli.corporations import DirectorInfo
from killcli.db.models import CharacterStatus
from killcli.errors import ExitCode, UsageError
from killcli.runtime import make_accounts
from killcli.sso.login import run_login
from killcli.textsafe import sanitize
from killcli.tokenfile import parse_token_file, read_secret

app = typer.Typer(
    name="users", help="Add, list and remove the characters killsync syncs.", no_args_is_help=True
)


def _accounts(app_ctx: AppContext, *, create: bool = False) -> Accounts:
    """``create``: adding characters may start a new database (see AppContext.database)."""
    accounts = make_accounts(app_ctx.settings, app_ctx.database(create=create))
    app_ctx.on_close(accounts.sso.close)
    return accounts


def _report_added(app_ctx: AppContext, result: AddResult) -> None:
    verb = "added" if result.created else "updated"
    app_ctx.info(f"{verb} {sanitize(result.name)} ({result.character_id})")
    if result.owner_changed:
        app_ctx.console.print(
            f"warning: {sanitize(result.name)} has a new owner (character "
            "transfer): "
            "the previous owner's token was discarded"
        )
    _check_directors(app_ctx, [result.character_id])


def _check_directors(app_ctx: AppContext, character_ids: list[int]) -> None:
    """Characters that granted the corporation scopes: are they Directors? (A Director's
    corporation becomes tracked; a check ESI cannot answer now is retried later.)"""
    if character_ids:
        report_checks(app_ctx, make_corporations(app_ctx).check_candidates(character_ids))


@app.command(
    "add",
    epilog=examples(
        "killsync users add --refresh-token - < token.txt",
        "killsync users add --refresh-token /run/secrets/eve_refresh_token",
    ),
)
def add(
    ctx: typer.Context,
    refresh_token: Annotated[
        str,
        typer.Option(
            "--refresh-token", help="'-' to read the token from stdin, or a file holding it."
        ),
    ],
) -> None:
    """Add a character from its refresh token (validated by one refresh)."""
    app_ctx = app_context(ctx)
    token = read_secret(refresh_token)
    _report_added(app_ctx, _accounts(app_ctx, create=True).add_refresh_token(token))


@app.command(
    "import",
    epilog=examples(
        "killsync users import tokens.txt",
        "killsync users import old-system-export.jsonl --json",
    ),
)
def import_tokens(
    ctx: typer.Context,
    path: Annotated[
        str,
        typer.Argument(
            help="One refresh token per line, or JSON lines with a refresh_token field; '-' "
            "for stdin."
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Add many characters at once (migrating from another system)."""
    app_ctx = app_context(ctx)
    tokens = parse_token_file(read_secret(path))
    result = _accounts(app_ctx, create=True).import_tokens(
        tokens,
        on_rejected=lambda r: app_ctx.console.print(
            f"line {r.line}: rejected: {sanitize(r.reason)}"
        ),
    )
    _check_directors(app_ctx, result.character_ids)
    counts = result.as_dict()
    if as_json:
        print_json("users.import", counts)
    else:
        app_ctx.info(", ".join(f"{k} {v}" for k, v in counts.items()))
    if result.rejected:
        raise typer.Exit(int(ExitCode.PARTIAL))


@app.command("list", epilog=examples("killsync users list", "killsync users list --json"))
def list_users(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Tracked characters: status, scopes, token expiry, last sync, killmails, errors."""
    app_ctx = app_context(ctx)
    infos = list_characters(app_ctx.database())
    if as_json:
        print_json("users", [info_as_dict(i) for i in infos])
        return
    table = Table(
        "id",
        "name",
        "status",
        "corporation",
        "token expires",
        "last sync",
        "killmails",
        "pending",
        "last error",
    )
    for i in infos:
        status = i.status if not i.status_reason else f"{i.status} ({i.status_reason})"
        table.add_row(
            str(i.character_id),
            sanitize(i.name),
            sanitize(status),
            _director(i.director),
            _when(i.access_expires_at),
            _when(i.last_sync_at),
            str(i.killmails),
            str(i.pending),
            sanitize((i.last_error or "")[:60]),
        )
    make_console(stderr=False).print(table)


def _director(director: DirectorInfo | None) -> str:
    """A director's corporation state: "98000001 usable", "no_role", "-" (not asked)."""
    if director is None:
        return "-"
    where = "" if director.corporation_id is None else f"{director.corporation_id} "
    return f"{where}{director.status}"


def _when(value: object) -> str:
    return "-" if value is None else str(value)[:19]


@app.command("remove", epilog=examples("killsync users remove 2112345678 --revoke"))
def remove(
    ctx: typer.Context,
    character_id: Annotated[
        int, typer.Argument(help="The character's id.", parser=params.character_id)
    ],
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Also revoke its refresh token at the SSO.")
    ] = False,
) -> None:
    """Stop syncing a character (its killmails stay in the database)."""
    app_ctx = app_context(ctx)
    if revoke:
        name = _accounts(app_ctx).remove(character_id, revoke=True)
    else:
        name, _ = remove_character(app_ctx.database(), character_id)
    app_ctx.info(
        f"removed {sanitize(name)} ({character_id})" + (", token revoked" if revoke else "")
    )


@app.command("disable", epilog=examples("killsync users disable 2112345678"))
def disable(
    ctx: typer.Context,
    character_id: Annotated[
        int, typer.Argument(help="The character's id.", parser=params.character_id)
    ],
) -> None:
    """Stop syncing a character for now (kept, with its token; `users enable` resumes)."""
    app_ctx = app_context(ctx)
    name = set_enabled(app_ctx.database(), character_id, enabled=False)
    app_ctx.info(f"disabled {sanitize(name)} ({character_id})")


@app.command("enable", epilog=examples("killsync users enable 2112345678"))
def enable(
    ctx: typer.Context,
    character_id: Annotated[
        int, typer.Argument(help="The character's id.", parser=params.character_id)
    ],
) -> None:
    """Resume syncing a disabled character."""
    app_ctx = app_context(ctx)
    name = set_enabled(app_ctx.database(), character_id, enabled=True)
    app_ctx.info(f"enabled {sanitize(name)} ({character_id})")


def login(
    ctx: typer.Context,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL instead of opening a browser.")
    ] = False,
    scopes: Annotated[
        list[str] | None, typer.Option("--scopes", help="Scopes to ask for (repeatable).")
    ] = None,
    corporation: Annotated[
        bool,
        typer.Option(
            "--corporation",
            help="Also ask for the corporation killmail and roles scopes: a Director's "
            "corporation is then synced too.",
        ),
    ] = False,
    timeout_s: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds to wait for the callback.", parser=params.timeout_s
        ),
    ] = 300.0,
) -> None:
    """Log a character in through EVE SSO (authorization code + PKCE) and track it; with
    --corporation, a Director's corporation is tracked too."""
    app_ctx = app_context(ctx)
    accounts = _accounts(app_ctx, create=True)
    wanted = list(scopes or DEFAULT_SCOPES)
    if corporation:
        wanted += [s for s in CORPORATION_LOGIN_SCOPES if s not in wanted]
    tokens = run_login(
        accounts.sso,
        app_ctx.settings.callback_url,
        wanted,
        open_browser=not no_browser,
        timeout_s=timeout_s,
        on_url=lambda url: app_ctx.console.print(f"Open this URL to log in: {url}"),
    )
    _report_added(app_ctx, accounts.store_login(tokens))


def refresh_token(
    ctx: typer.Context,
    character_ids: Annotated[
        list[int] | None,
        typer.Argument(
            help="Characters to refresh.", show_default=False, parser=params.character_id
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every active character.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Refresh access tokens now and report each character (ok / needs login)."""
    app_ctx = app_context(ctx)
    accounts = _accounts(app_ctx)
    if all_:
        ids = [
            i.character_id
            for i in list_characters(app_ctx.database())
            if i.status == CharacterStatus.ACTIVE
        ]
    elif character_ids:
        ids = list(character_ids)
    else:
        raise UsageError("name characters to refresh, or --all")
    show = is_interactive() and not as_json and app_ctx.verbosity >= 0 and len(ids) > 1
    with Progress(
        PlainTextColumn("refreshing tokens"),
        BarColumn(),
        MofNCompleteColumn(),
        console=app_ctx.console,
        disable=not show,
    ) as progress:
        results = [accounts.refresh(cid) for cid in progress.track(ids)]
    if as_json:
        print_json("refresh", [r.as_dict() for r in results])
    else:
        for r in results:
            state = (
                f"ok, expires {_when(r.expires_at)}"
                if r.ok
                else f"RETRY LATER: {r.reason}"
                if r.retryable
                else f"NEEDS LOGIN: {r.reason}"
            )
            typer.echo(f"{r.character_id}\t{sanitize(r.name)}\t{sanitize(state)}")
    if any(not r.ok and not r.retryable for r in results):
        raise typer.Exit(int(ExitCode.NEEDS_LOGIN))
    if not all(r.ok for r in results):  # tokens kept, verification to retry: SSO trouble
        raise typer.Exit(int(ExitCode.ESI_UNAVAILABLE))


def register(root: typer.Typer) -> None:
    root.add_typer(app)
    root.command(
        "login",
        epilog=examples(
            "killsync login",
            "killsync login --corporation",
            "killsync login --no-browser --timeout 120",
        ),
    )(login)
    root.command(
        "refresh-token",
        epilog=examples("killsync refresh-token --all", "killsync refresh-token 2112345678 --json"),
    )(refresh_token)
