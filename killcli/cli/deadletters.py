"""`killsync dead-letters list|requeue|purge`: the broker's dead jobs, for operators.

Each broker is the one authority for its own dead letters: the ``dead_letters`` table of
the database queue, the ``<queue>.dead`` queue on RabbitMQ. These commands (and the count
in `killsync stats`) ask the broker the settings name, never the table behind another one.

A group of its own rather than `killsync queue dead ...`: `queue` is the command cron runs
(``killsync queue --quiet``); a group there would run its callback, the queueing, before
any sub-command, and would accept ``killsync queue --all dead purge``.

Reasons, job ids and raw messages come from outside (exception texts, ESI error bodies, a
malformed message): every cell shown goes through :func:`~killcli.textsafe.sanitize`
(and the console), ``--json`` is written by :func:`~killcli.cli.context.print_json`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.console import make_console
from killcli.errors import UsageError
from killcli.queue import open_broker
from killcli.queue.base import Broker, DeadLetterInfo
from killcli.textsafe import sanitize

DEFAULT_LIMIT = 50
REASON_WIDTH = 80
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
app = typer.Typer(
    name="dead-letters",
    no_args_is_help=True,
    help="Jobs that failed for good (the broker's dead letters): list, requeue or purge them.",
)


def _broker(app_ctx: AppContext) -> Broker:
    broker = open_broker(app_ctx.settings, app_ctx.database())
    app_ctx.on_close(broker.close)
    return broker


def _asks_for(message: str) -> UsageError:
    """The usage error of a command run without the flag that says "all of them"."""
    return UsageError(message, hint="`killsync dead-letters list` shows them first")


@app.command(
    "list",
    epilog=examples(
        "killsync dead-letters list",
        "killsync dead-letters list --limit 500 --json | jq '.data.dead_letters[].reason'",
    ),
)
def list_cmd(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", help="Show at most this many.", parser=params.count)
    ] = DEFAULT_LIMIT,
    as_json: JsonFlag = False,
) -> None:
    """Dead jobs, oldest first, with why they died (they stay dead)."""
    app_ctx = app_context(ctx)
    broker = _broker(app_ctx)
    total = broker.stats().dead_letters
    dead = broker.dead_letters(limit=limit)
    if as_json:
        rows = [asdict(d) for d in dead]
        print_json(
            "dead-letters", {"queue": broker.queue_name, "total": total, "dead_letters": rows}
        )
        return
    table = Table("job", "list", "attempts", "failed at", "reason", title=f"{total} dead letters")
    for d in dead:
        table.add_row(
            sanitize(d.job_id or "-"),
            _list_of(d),
            str(d.attempts),
            "-" if d.failed_at is None else str(d.failed_at)[:19],
            sanitize(d.reason[:REASON_WIDTH]),
        )
    make_console(stderr=False).print(table)
    if total > len(dead):
        app_ctx.info(f"showing {len(dead)} of {total}: see --limit")


def _list_of(dead: DeadLetterInfo) -> str:
    if dead.corporation_id is not None:
        return f"corporation {dead.corporation_id}"
    return "-" if dead.character_id is None else str(dead.character_id)


@app.command(
    "requeue",
    epilog=examples(
        "killsync dead-letters requeue --all",
        "killsync dead-letters requeue --all --json",
    ),
)
def requeue_cmd(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", help="Every dead job (required: no subset is supported).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Give dead jobs a fresh start (attempt 0); a character already queued keeps its job."""
    if not all_:
        raise _asks_for("requeue takes every dead job at once: add --all")
    app_ctx = app_context(ctx)
    result = _broker(app_ctx).requeue_dead_letters()
    if as_json:
        print_json("dead-letters.requeue", asdict(result))
        return
    app_ctx.info(
        f"requeued {result.requeued}, dropped {result.dropped} (already queued), "
        f"kept {result.kept} (unreadable, still dead)"
    )


@app.command(
    "purge",
    epilog=examples("killsync dead-letters purge --yes", "killsync -q dead-letters purge --yes"),
)
def purge_cmd(
    ctx: typer.Context,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete them (there is no undo).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete every dead job (read `dead-letters list` first)."""
    app_ctx = app_context(ctx)
    broker = _broker(app_ctx)
    if not yes:
        raise _asks_for(f"purge deletes all {broker.stats().dead_letters} dead letters: add --yes")
    purged = broker.purge_dead_letters()
    if as_json:
        print_json("dead-letters.purge", {"purged": purged})
        return
    app_ctx.info(f"purged {purged} dead letters")
