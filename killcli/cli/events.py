"""`killsync watch` and `killsync events prune|relay`: the killmail.saved events.

The modules that talk to RabbitMQ are imported inside the commands: ``pika`` costs
``--help`` and every other command time for nothing.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from killcli.cli import params
from killcli.cli.context import app_context, examples, print_json
from killcli.cli.params import JsonFlag
from killcli.console import make_console
from killcli.db.types import utcnow
from killcli.errors import UsageError
from killcli.events.outbox import EXCHANGE, OutboxEvent, parse_age, prune
from killcli.events.render import event_json, kill_line
from killcli.signals import stop_on_signals
from killcli.textsafe import dumps_for_terminal

EXCHANGE_HELP = "Fanout exchange on RabbitMQ."
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
    """Add `watch` and `events` to the root command."""
    root.command(
        "watch",
        epilog=examples(
            "killsync watch",
            "killsync watch --json --character 2112345678 | jq .payload",
            "killsync watch --from-start --max-events 10 --timeout 30",
        ),
    )(watch)
    root.add_typer(events_app)
