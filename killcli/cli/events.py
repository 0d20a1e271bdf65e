"""`killsync watch`, `killsync webhooks ...` and `killsync events prune|relay`.

The modules that talk to RabbitMQ are imported inside the commands: ``pika`` costs
``--help`` and every other command time for nothing.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.console import make_console
from killcli.db.types import utcnow
from killcli.errors import ExitCode, InputError, UsageError
from killcli.events.hookpost import PostStatus, make_client
from killcli.events.outbox import EXCHANGE, OutboxEvent, parse_age, prune
from killcli.events.render import event_json, kill_line
from killcli.events.webhooks import (
    DEFAULT_MAX_AGE_S,
    DeliveryResult,
    add_webhook,
    list_webhooks,
    remove_webhook,
    run_delivery,
    send_test_message,
)
from killcli.secrets import make_cipher
from killcli.signals import stop_on_signals
from killcli.sso.crypto import TokenCipher
from killcli.textsafe import dumps_for_terminal, sanitize

EXCHANGE_HELP = "Fanout exchange on RabbitMQ."
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
webhooks_app = typer.Typer(
    name="webhooks", no_args_is_help=True, help="Post fresh kills to Discord or Slack channels."
)
events_app = typer.Typer(
    name="events",
    no_args_is_help=True,
    help="The killmail.saved events outbox: prune it, relay it.",
)


def watch(
    ctx: typer.Context,
    as_json: JsonFlag = False,
    from_start: Annotated[
        bool,
        typer.Option(
            "--from-start", help="Replay the outbox first instead of starting at the newest."
        ),
    ] = False,
    character: Annotated[
        int | None,
        typer.Option(
            "--character",
            help="Only kills of this character.",
            show_default=False,
            parser=params.character_id,
        ),
    ] = None,
    max_events: Annotated[
        int | None,
        typer.Option("--max-events", min=1, help="Exit after N events.", show_default=False),
    ] = None,
    timeout_s: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="Exit after S seconds.", show_default=False),
    ] = None,
    exchange: Annotated[str, typer.Option("--exchange", help=EXCHANGE_HELP)] = EXCHANGE,
) -> None:
    """Print killmail.saved events as they happen (one line, or one JSON object, each)."""
    from killcli.events.watch import WatchOptions, follow  # noqa: PLC0415 - see module doc

    app_ctx = app_context(ctx)
    out = make_console(stderr=False)

    def show(event: OutboxEvent) -> None:
        if as_json:
            typer.echo(dumps_for_terminal(event_json(event)))
        else:
            out.print(kill_line(event.payload))

    options = WatchOptions(character_id=character, max_events=max_events, timeout_s=timeout_s)
    with stop_on_signals() as stop:
        result = follow(
            app_ctx.settings.broker_url,
            app_ctx.database,
            show,
            options,
            stop,
            from_start=from_start,
            exchange=exchange,
            on_ready=lambda where: app_ctx.info(f"watching {where}; Ctrl-C to stop"),
        )
    app_ctx.detail(f"{result.shown} events shown, stopped: {result.reason}")


def _cipher(app_ctx: AppContext) -> TokenCipher:
    return make_cipher(app_ctx.settings, app_ctx.database())


def _read_url(source: str) -> str:
    """The URL itself, or '-' to read it from stdin (keeps it out of history and `ps`)."""
    if source != "-":
        return source
    text = sys.stdin.readline().strip()
    if not text:
        raise InputError("no webhook URL on stdin")
    return text


@webhooks_app.command(
    "add",
    epilog=examples(
        "killsync webhooks add discord - < discord-url.txt",
        "killsync webhooks add slack - --max-age 1800 < slack-url.txt",
        "killsync webhooks add discord - --character 2112345678",
    ),
)
def add(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="discord or slack.")],
    url: Annotated[
        str,
        typer.Argument(
            help="The webhook URL, or '-' to read it from stdin (preferred: it is a secret)."
        ),
    ],
    character: Annotated[
        int | None,
        typer.Option(
            "--character", help="Only kills of this character.", parser=params.character_id
        ),
    ] = None,
    max_age_s: Annotated[
        int,
        typer.Option(
            "--max-age", help="Post only kills younger than this, in seconds.", parser=params.age_s
        ),
    ] = DEFAULT_MAX_AGE_S,
    allow_insecure: Annotated[
        bool, typer.Option("--allow-insecure", help="Accept http://127.0.0.1 (simulators).")
    ] = False,
) -> None:
    """Add a webhook; it posts kills saved from now on (the URL is stored encrypted)."""
    app_ctx = app_context(ctx)
    info = add_webhook(
        app_ctx.database(),
        _cipher(app_ctx),
        kind,
        _read_url(url),
        character_id=character,
        max_age_s=max_age_s,
        allow_insecure=allow_insecure,
    )
    app_ctx.info(
        f"added webhook {info.id}: {info.kind} {info.url}, kills younger than "
        f"{info.max_age_s} s" + (f", character {character}" if character else "")
    )


@webhooks_app.command("list", epilog=examples("killsync webhooks list --json"))
def list_cmd(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Configured webhooks, URLs masked."""
    app_ctx = app_context(ctx)
    infos = list_webhooks(app_ctx.database(), _cipher(app_ctx))
    if as_json:
        print_json("webhooks", [i.as_dict() for i in infos])
        return
    table = Table("id", "kind", "url", "character", "max age", "cursor", "state", "last error")
    for i in infos:
        state = (
            "disabled"
            if not i.enabled
            else (
                f"resting until {i.blocked_until:%H:%M:%S}"
                if i.blocked_until and i.blocked_until > utcnow()
                else "enabled"
            )
        )
        table.add_row(
            str(i.id),
            i.kind,
            i.url,
            str(i.character_id or "-"),
            f"{i.max_age_s} s",
            str(i.cursor_event_id),
            state,
            sanitize((i.last_error or "")[:60]),
        )
    make_console(stderr=False).print(table)


@webhooks_app.command("remove", epilog=examples("killsync webhooks remove 3"))
def remove(
    ctx: typer.Context,
    webhook_id: Annotated[int, typer.Argument(help="Its id.", parser=params.row_id)],
) -> None:
    """Delete a webhook."""
    app_ctx = app_context(ctx)
    remove_webhook(app_ctx.database(), webhook_id)
    app_ctx.info(f"removed webhook {webhook_id}")


@webhooks_app.command("test", epilog=examples("killsync webhooks test 3"))
def test(
    ctx: typer.Context,
    webhook_id: Annotated[int, typer.Argument(help="Its id.", parser=params.row_id)],
) -> None:
    """Post one sample message (a 404 disables the webhook, as delivery would)."""
    app_ctx = app_context(ctx)
    http = make_client()
    app_ctx.on_close(http.close)
    result = send_test_message(app_ctx.database(), _cipher(app_ctx), http, webhook_id)
    if result.status is PostStatus.OK:
        app_ctx.info(f"webhook {webhook_id}: test message posted")
        return
    wait = f", retry in {result.wait_s:.0f} s" if result.wait_s else ""
    gone = "; webhook disabled" if result.status is PostStatus.GONE else ""
    app_ctx.console.print(f"webhook {webhook_id}: test failed: {result.detail}{wait}{gone}")
    bad = result.status in {PostStatus.GONE, PostStatus.REJECTED}
    raise typer.Exit(int(ExitCode.USAGE if bad else ExitCode.PARTIAL))


@webhooks_app.command(
    "deliver",
    epilog=examples("killsync webhooks deliver", "killsync webhooks deliver --once   # from cron"),
)
def deliver(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    poll_s: Annotated[
        float, typer.Option("--poll", min=0.1, help="Seconds between looks at the outbox.")
    ] = 5.0,
    as_json: JsonFlag = False,
) -> None:
    """Post fresh kills to every webhook until Ctrl-C/SIGTERM (or once)."""
    app_ctx = app_context(ctx)
    http = make_client()
    app_ctx.on_close(http.close)

    def report(result: DeliveryResult) -> None:
        for r in result.rounds:
            if r.posted or r.detail:
                app_ctx.detail(
                    f"webhook {r.webhook_id}: {r.outcome}, posted {r.posted}, "
                    f"skipped {r.skipped} {r.detail}".rstrip()
                )

    with stop_on_signals() as stop:
        totals = run_delivery(
            app_ctx.database(),
            _cipher(app_ctx),
            http,
            wait=stop.wait,
            once=once,
            poll_s=poll_s,
            on_round=report,
        )
    if as_json:
        print_json("webhooks.deliver", asdict(totals))
    else:
        app_ctx.info(
            f"posted {totals.posted}, skipped {totals.skipped} (old or filtered), "
            f"disabled {totals.disabled}, failed {totals.failed}"
        )
    if once and (totals.failed or totals.disabled):
        raise typer.Exit(int(ExitCode.PARTIAL))


@events_app.command(
    "prune",
    epilog=examples(
        "killsync events prune --older-than 7d", "15 4 * * *  killsync events prune  # crontab"
    ),
)
def prune_cmd(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Retention: 7d, 12h, 90m or seconds.")
    ] = "7d",
    as_json: JsonFlag = False,
) -> None:
    """Delete old events, and published ones every webhook has passed."""
    app_ctx = app_context(ctx)
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    result = prune(app_ctx.database(), utcnow() - age)
    if as_json:
        print_json("events.prune", asdict(result))
    else:
        app_ctx.info(f"pruned {result.deleted} events, {result.remaining} left")


@events_app.command("relay", epilog=examples("killsync events relay"))
def relay_cmd(
    ctx: typer.Context,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Events per transaction.")] = 200,
    exchange: Annotated[str, typer.Option("--exchange", help=EXCHANGE_HELP)] = EXCHANGE,
    as_json: JsonFlag = False,
) -> None:
    """Publish unpublished events to RabbitMQ now (workers do it after each job)."""
    from killcli.events.relay import relay_pending  # noqa: PLC0415 - see module doc

    app_ctx = app_context(ctx)
    broker_url = app_ctx.settings.broker_url
    if not app_ctx.settings.uses_rabbitmq or broker_url is None:
        raise UsageError("events relay needs RabbitMQ (KILLSYNC_BROKER_URL=amqp://...)")
    published = relay_pending(app_ctx.database(), broker_url, batch=batch, exchange=exchange)
    if as_json:
        print_json("events.relay", {"published": published})
    else:
        app_ctx.info(f"published {published} events")


def register(root: typer.Typer) -> None:
    """Add `watch`, `webhooks` and `events` to the root command."""
    root.command(
        "watch",
        epilog=examples(
            "killsync watch",
            "killsync watch --json --character 2112345678 | jq .payload",
            "killsync watch --from-start --max-events 10 --timeout 30",
        ),
    )(watch)
    root.add_typer(webhooks_app)
    root.add_typer(events_app)
