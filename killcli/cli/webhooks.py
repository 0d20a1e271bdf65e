"""`killsync webhooks add|edit|list|remove|test|deliver`: post fresh kills to chat channels."""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.table import Table

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.cli.params import JsonFlag
from killcli.console import make_console
from killcli.db.types import utcnow
from killcli.errors import ExitCode, InputError, UsageError
from killcli.events.filters import FilterEdit, load_filters, make_filters
from killcli.events.hookconfig import (
    DEFAULT_MAX_AGE_S,
    add_webhook,
    edit_webhook,
    get_webhook,
    list_webhooks,
    remove_webhook,
)
from killcli.events.hookpost import PostStatus, make_client
from killcli.events.webhooks import DeliveryResult, run_delivery, send_test_message
from killcli.kills import Owner, Side
from killcli.secrets import make_cipher
from killcli.signals import stop_on_signals
from killcli.sso.crypto import TokenCipher
from killcli.textsafe import sanitize

app = typer.Typer(
    name="webhooks", no_args_is_help=True, help="Post fresh kills to Discord or Slack channels."
)


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


CharacterOption = Annotated[
    int | None,
    typer.Option(
        "--character",
        help="Only kills and losses of this character.",
        show_default=False,
        parser=params.character_id,
    ),
]
CorporationOption = Annotated[
    int | None,
    typer.Option(
        "--corporation",
        help="Only kills and losses of this corporation.",
        show_default=False,
        parser=params.corporation_id,
    ),
]
DelayOption = Annotated[
    timedelta | None,
    typer.Option(
        "--delay",
        help="Post a kill only once it is this old (opsec): 15m, 2h, 0 for none; at most 1d.",
        show_default=False,
        parser=params.duration,
        metavar="DURATION",
    ),
]
KillsOnly = Annotated[
    bool, typer.Option("--kills-only", help="Only kills of the character or corporation.")
]
LossesOnly = Annotated[
    bool, typer.Option("--losses-only", help="Only losses of the character or corporation.")
]
SystemOption = Annotated[
    list[int] | None,
    typer.Option(
        "--system",
        help="Only kills in this solar system (repeatable).",
        show_default=False,
        parser=params.system_id,
    ),
]


RegionOption = Annotated[
    list[int] | None,
    typer.Option(
        "--region",
        help="Only kills in this region (repeatable; 10000002 The Forge).",
        show_default=False,
        parser=params.region_id,
    ),
]
ShipGroupOption = Annotated[
    list[int] | None,
    typer.Option(
        "--ship-group",
        help="Only kills of a victim's ship of this inventory group (repeatable; 30 titans).",
        show_default=False,
        parser=params.group_id,
    ),
]
MinValueOption = Annotated[
    Decimal | None,
    typer.Option(
        "--min-value",
        help="Only kills worth at least this (2500000, 500m, 1.5b); unvalued kills are not posted.",
        show_default=False,
        parser=params.isk,
        metavar="ISK",
    ),
]


def _side(kills_only: bool, losses_only: bool) -> Side | None:
    if kills_only and losses_only:
        raise UsageError("give --kills-only or --losses-only, not both")
    return Side.KILL if kills_only else Side.LOSS if losses_only else None


def _delay_s(delay: timedelta | None) -> int:
    return 0 if delay is None else int(delay.total_seconds())


@app.command(
    "add",
    epilog=examples(
        "killsync webhooks add discord - < discord-url.txt",
        "killsync webhooks add slack - --max-age 1800 < slack-url.txt",
        "killsync webhooks add discord - --character 2112345678",
        "killsync webhooks add discord - --corporation 98000001 --losses-only --delay 30m",
        "killsync webhooks add slack - --system 30000142 --system 30002187 < slack-url.txt",
        "killsync webhooks add discord - --min-value 1b --delay 15m < big-kills-url.txt",
        "killsync webhooks add discord - --region 10000060 --ship-group 30 < caps-url.txt",
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
    character: CharacterOption = None,
    corporation: CorporationOption = None,
    max_age_s: Annotated[
        int,
        typer.Option(
            "--max-age",
            help="Post only kills younger than this (after the delay), in seconds.",
            parser=params.age_s,
        ),
    ] = DEFAULT_MAX_AGE_S,
    delay: DelayOption = None,
    kills_only: KillsOnly = False,
    losses_only: LossesOnly = False,
    system: SystemOption = None,
    region: RegionOption = None,
    ship_group: ShipGroupOption = None,
    min_value: MinValueOption = None,
    allow_insecure: Annotated[
        bool, typer.Option("--allow-insecure", help="Accept http://127.0.0.1 (simulators).")
    ] = False,
) -> None:
    """Add a webhook; it posts kills saved from now on (the URL is stored encrypted)."""
    app_ctx = app_context(ctx)
    filters = make_filters(
        side=_side(kills_only, losses_only),
        system_ids=system or (),
        region_ids=region or (),
        ship_group_ids=ship_group or (),
        min_value=min_value,
    )
    Owner.of(character, corporation)  # not both
    info = add_webhook(
        app_ctx.database(),
        _cipher(app_ctx),
        kind,
        _read_url(url),
        character_id=character,
        corporation_id=corporation,
        max_age_s=max_age_s,
        delay_s=_delay_s(delay),
        filters=filters,
        allow_insecure=allow_insecure,
    )
    app_ctx.info(f"added webhook {info.id}: {info.kind} {info.url}, {info.describe()}")


@app.command(
    "edit",
    epilog=examples(
        "killsync webhooks edit 3 --delay 1h",
        "killsync webhooks edit 3 --character 2112345678 --kills-only",
        "killsync webhooks edit 3 --system 30000142 --system 30002187",
        "killsync webhooks edit 3 --min-value 500m",
        "killsync webhooks edit 3 --all-sides --all-systems --any-value --delay 0",
    ),
)
def edit(
    ctx: typer.Context,
    webhook_id: Annotated[int, typer.Argument(help="Its id.", parser=params.row_id)],
    character: CharacterOption = None,
    corporation: CorporationOption = None,
    anyone: Annotated[
        bool, typer.Option("--anyone", help="Follow no character or corporation any more.")
    ] = False,
    max_age_s: Annotated[
        int | None,
        typer.Option(
            "--max-age",
            help="Post only kills younger than this (after the delay), in seconds.",
            show_default=False,
            parser=params.age_s,
        ),
    ] = None,
    delay: DelayOption = None,
    kills_only: KillsOnly = False,
    losses_only: LossesOnly = False,
    all_sides: Annotated[bool, typer.Option("--all-sides", help="Kills and losses again.")] = False,
    system: SystemOption = None,
    all_systems: Annotated[
        bool, typer.Option("--all-systems", help="Every solar system again.")
    ] = False,
    region: RegionOption = None,
    all_regions: Annotated[bool, typer.Option("--all-regions", help="Every region again.")] = False,
    ship_group: ShipGroupOption = None,
    all_ship_groups: Annotated[
        bool, typer.Option("--all-ship-groups", help="Every ship group again.")
    ] = False,
    min_value: MinValueOption = None,
    any_value: Annotated[
        bool, typer.Option("--any-value", help="Kills of any value again.")
    ] = False,
) -> None:
    """Change what a webhook posts and when; what is not given stays as it is."""
    app_ctx = app_context(ctx)
    db, cipher = app_ctx.database(), _cipher(app_ctx)
    changes: dict[str, Any] = {}
    if anyone and (character or corporation):
        raise UsageError("give --anyone or --character/--corporation, not both")
    if anyone or character or corporation:
        changes["owner"] = Owner.of(character, corporation)
    if max_age_s is not None:
        changes["max_age_s"] = max_age_s
    if delay is not None:
        changes["delay_s"] = _delay_s(delay)
    side = _side(kills_only, losses_only)
    dropped = {
        "side": all_sides,
        "systems": all_systems,
        "regions": all_regions,
        "ship_groups": all_ship_groups,
        "min_value": any_value,
    }
    edit = FilterEdit(
        tuple(
            make_filters(
                side=side,
                system_ids=system or (),
                region_ids=region or (),
                ship_group_ids=ship_group or (),
                min_value=min_value,
            )
        ),
        frozenset(kind for kind, drop in dropped.items() if drop),
    )
    if edit:
        current = load_filters(get_webhook(db, cipher, webhook_id).filters)
        changes["filters"] = edit.apply(current)
    info = edit_webhook(db, cipher, webhook_id, **changes)
    app_ctx.info(f"webhook {info.id}: {info.describe()}")


@app.command("list", epilog=examples("killsync webhooks list --json"))
def list_cmd(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Configured webhooks, URLs masked."""
    app_ctx = app_context(ctx)
    infos = list_webhooks(app_ctx.database(), _cipher(app_ctx))
    if as_json:
        print_json("webhooks", [i.as_dict() for i in infos])
        return
    table = Table("id", "kind", "url", "posts", "cursor", "state", "last error")
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
            i.describe(),
            str(i.cursor_event_id),
            state,
            sanitize((i.last_error or "")[:60]),
        )
    make_console(stderr=False).print(table)


@app.command("remove", epilog=examples("killsync webhooks remove 3"))
def remove(
    ctx: typer.Context,
    webhook_id: Annotated[int, typer.Argument(help="Its id.", parser=params.row_id)],
) -> None:
    """Delete a webhook."""
    app_ctx = app_context(ctx)
    remove_webhook(app_ctx.database(), webhook_id)
    app_ctx.info(f"removed webhook {webhook_id}")


@app.command("test", epilog=examples("killsync webhooks test 3"))
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


@app.command(
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


def register(root: typer.Typer) -> None:
    """Add `webhooks` to the root command."""
    root.add_typer(app)
