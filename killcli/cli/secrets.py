"""`killsync secrets status|rotate`: which key encrypts the stored secrets, and key rotation."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.cli.params import JsonFlag
from killcli.errors import ExitCode
from killcli.secrets import (
    DEFAULT_BATCH_SIZE,
    LABELS,
    RotateResult,
    SecretsStatusResult,
    make_cipher,
    rotate_secrets,
    secrets_status,
)
from killcli.sso.crypto import TokenCipher

app = typer.Typer(
    name="secrets",
    no_args_is_help=True,
    help="Keys encrypting tokens and webhook URLs at rest: status, rotation.",
)
BatchOption = Annotated[
    int, typer.Option("--batch", min=1, max=10_000, help="Rows per transaction.")
]


def _cipher(app_ctx: AppContext) -> TokenCipher:
    return make_cipher(app_ctx.settings, app_ctx.database())


def _values(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


def _verdict(total: int, on_first_key: int, key_count: int) -> str:
    """The line that says whether the old keys can go."""
    if on_first_key < total:
        return (
            f"{total - on_first_key} of {_values(total)} not under key #1 yet: keep "
            "every key until `killsync secrets rotate` has moved them"
        )
    every = {0: "no encrypted values yet", 1: "the 1 value is under key #1"}.get(
        total, f"all {total} values are under key #1"
    )
    if key_count == 1:
        return f"{every} (the only key)"
    return f"{every}; you can now remove the other keys"


@app.command(
    "status",
    epilog=examples("killsync secrets status", "killsync secrets status --json | jq .data.kinds"),
)
def status(
    ctx: typer.Context, as_json: JsonFlag = False, batch: BatchOption = DEFAULT_BATCH_SIZE
) -> None:
    """Count the encrypted values of each kind by the key that opens them (never a secret)."""
    app_ctx = app_context(ctx)
    result = secrets_status(app_ctx.database(), _cipher(app_ctx), batch_size=batch)
    if as_json:
        print_json("secrets.status", result.as_dict())
        return
    _status_table(app_ctx, result)
    app_ctx.info(_verdict(result.total, result.on_first_key, result.key_count))


def _status_table(app_ctx: AppContext, result: SecretsStatusResult) -> None:
    keys = [f"key #{n}" for n in range(1, result.key_count + 1)]
    table = Table("values", *keys, "no key opens it", "total")
    for kind in result.kinds:
        table.add_row(
            LABELS[kind.kind], *map(str, kind.by_key), str(kind.undecryptable), str(kind.total)
        )
    app_ctx.console.print(table)


@app.command(
    "rotate",
    epilog=examples(
        'KILLSYNC_SECRET_KEY="$NEW,$OLD" killsync secrets rotate', "killsync secrets rotate --json"
    ),
)
def rotate(
    ctx: typer.Context, as_json: JsonFlag = False, batch: BatchOption = DEFAULT_BATCH_SIZE
) -> None:
    """Re-encrypt every stored token and webhook URL under key #1 (the first key listed).

    Put the new key in front of the old ones (KILLSYNC_SECRET_KEY="NEW,OLD", or in the key
    file), run this, then drop the old keys once it says so. Values no key opens are
    counted and kept as they are (exit code 3). Safe to run again.
    """
    app_ctx = app_context(ctx)
    result = rotate_secrets(app_ctx.database(), _cipher(app_ctx), batch_size=batch)
    if as_json:
        print_json("secrets.rotate", result.as_dict())
    else:
        _report_rotation(app_ctx, result)
    if result.undecryptable or result.changed:
        raise typer.Exit(int(ExitCode.PARTIAL))


def _report_rotation(app_ctx: AppContext, result: RotateResult) -> None:
    table = Table(
        "values", "re-encrypted", "already under key #1", "no key opens it", "changed meanwhile"
    )
    for kind in result.kinds:
        table.add_row(
            LABELS[kind.kind],
            str(kind.rotated),
            str(kind.current),
            str(kind.undecryptable),
            str(kind.changed),
        )
    app_ctx.console.print(table)
    if result.undecryptable:
        app_ctx.console.print(
            f"{_values(result.undecryptable)} cannot be decrypted with "
            "any configured key and were left as they are"
        )
    if result.changed:
        app_ctx.console.print(
            f"{_values(result.changed)} changed during the rotation: run "
            "`killsync secrets rotate` again"
        )
    app_ctx.info(
        f"re-encrypted {_values(result.rotated)}; "
        + _verdict(result.total, result.on_first_key, result.key_count)
    )
