"""`killsync prices import|sync` and `killsync values`: market prices and killmail values."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from killcli.cli import params
from killcli.cli.context import AppContext, app_context, examples, print_json
from killcli.cli.params import JsonFlag, parse_since
from killcli.cli.progressview import count_bar
from killcli.config import env_var
from killcli.db import Database
from killcli.errors import ExitCode
from killcli.prices.importer import import_price_files
from killcli.prices.sync import DEFAULT_PER_MINUTE, sync_prices
from killcli.runtime import close_esi, make_esi
from killcli.textsafe import sanitize
from killcli.values import ValuesResult, compute_values

app = typer.Typer(
    name="prices",
    help="Daily market prices that value killmails: import EVE Ref archives, sync from ESI.",
    no_args_is_help=True,
)
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
NoValues = Annotated[
    bool,
    typer.Option(
        "--no-values",
        help="Do not value the killmails the new prices change (leave it to killsync values).",
    ),
]
Region = Annotated[
    int | None,
    typer.Option(
        "--region",
        help=f"Region to store [default: {env_var('price_region')}, else The Forge].",
        parser=params.region_id,
        show_default=False,
    ),
]


def register(app_: typer.Typer) -> None:
    app_.add_typer(app)
    app_.command(
        "values",
        epilog=examples(
            "killsync values",
            "killsync prices sync && killsync values --json",
            "killsync values --recompute --since 2026-01-01",
        ),
    )(values_cmd)


def _progress(app_ctx: AppContext, no_progress: bool, unit: str) -> Progress:
    return count_bar(app_ctx.console, show=not no_progress and app_ctx.verbosity >= 0, unit=unit)


@app.command(
    "import",
    epilog=examples(
        "killsync prices import market-history/2025/",
        "killsync prices import market-history-2025-01-01.csv.bz2 --json",
        "killsync prices import --region 10000043 market-history/",
    ),
)
def import_cmd(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="EVE Ref market-history-YYYY-MM-DD.csv.bz2 files, .csv files, directories.",
            show_default=False,
        ),
    ],
    region: Region = None,
    force: Annotated[
        bool, typer.Option("--force", help="Import files already imported again.")
    ] = False,
    as_json: JsonFlag = False,
    no_progress: NoProgress = False,
    no_values: NoValues = False,
) -> None:
    """Import EVE Ref's daily market-history archives.

    One transaction per file; files imported before are skipped, so a stopped import
    resumes. Only the price region's rows are stored. Then values the killmails the new
    prices change, as killsync values does (--no-values: not).
    """
    app_ctx = app_context(ctx)
    db = app_ctx.database(create=True)
    region_id = region or app_ctx.settings.price_region_id
    with _progress(app_ctx, no_progress, "rows") as progress:
        task = progress.add_task("importing", total=None)
        result = import_price_files(
            db,
            paths,
            region_id,
            force=force,
            on_file=lambda p: progress.update(task, description=p.name),
            on_rows=lambda n: progress.advance(task, n),
        )
    for error in result.errors:
        app_ctx.console.print(f"rejected: {sanitize(error)}")
    summary = result.as_dict()
    if not as_json:
        app_ctx.info(
            f"imported {result.rows} rows of region {region_id} from {result.files} files "
            f"({result.skipped_files} already imported, {result.failed_files} failed, "
            f"{result.rejected_rows} rows rejected) at {summary['rows_per_s']} rows/s"
        )
    summary["values"] = None
    if not no_values and region_id == app_ctx.settings.price_region_id:
        summary["values"] = _value_changed(app_ctx, db, as_json, no_progress)
    if as_json:
        print_json("prices.import", summary)
    if result.failed_files or result.rejected_rows:
        raise typer.Exit(int(ExitCode.PARTIAL))


@app.command(
    "sync",
    epilog=examples(
        "killsync prices sync",
        "killsync prices sync --days 30 --json",
        "killsync prices sync && killsync values",
    ),
)
def sync_cmd(
    ctx: typer.Context,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            help="Only the types of killmails of the last N days [default: all stored].",
            parser=params.days,
            show_default=False,
        ),
    ] = None,
    per_minute: Annotated[
        int,
        typer.Option(
            "--per-minute",
            help="Market-history requests a minute at most (CCP allows about 300).",
            parser=params.per_minute,
        ),
    ] = DEFAULT_PER_MINUTE,
    as_json: JsonFlag = False,
    no_progress: NoProgress = False,
    no_values: NoValues = False,
) -> None:
    """Fetch from ESI the market history of the types stored killmails need.

    One call a type, under CCP's per-minute limit of the route; each type is refreshed
    daily at 11:05 UTC (its Expires), so a stopped run resumes and a second run the same
    day asks for nothing. Also refreshes /markets/prices (hourly), the fallback. Then
    values the killmails the new prices change, as killsync values does (--no-values: not).
    """
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    esi = make_esi(app_ctx.settings, db)
    app_ctx.on_close(lambda: close_esi(esi))
    with _progress(app_ctx, no_progress, "types") as progress:
        task = progress.add_task("market history", total=None)
        result = sync_prices(
            db,
            esi,
            app_ctx.settings.price_region_id,
            days=days,
            per_minute=per_minute,
            on_type=lambda done, due: progress.update(task, completed=done, total=due),
        )
    summary = result.as_dict()
    if not as_json:
        app_ctx.info(
            f"market history of region {result.region_id}: {result.fetched} types fetched "
            f"({result.without_history} without history), {result.fresh} still fresh, "
            f"{result.rows} rows; /markets/prices: {result.market_prices} rows"
        )
    summary["values"] = None
    if not no_values:
        summary["values"] = _value_changed(app_ctx, db, as_json, no_progress, esi)
    if as_json:
        print_json("prices.sync", summary)
    if result.stopped:
        app_ctx.console.print(f"stopped: {sanitize(result.stopped)} (run it again to resume)")
        raise typer.Exit(int(ExitCode.PARTIAL))


def _value_changed(
    app_ctx: AppContext, db: Database, as_json: bool, no_progress: bool, esi: Any = None
) -> dict[str, Any]:
    """`killsync values` after new prices: what they changed, and what has no value."""
    if esi is None:
        esi = make_esi(app_ctx.settings, db)
        app_ctx.on_close(lambda: close_esi(esi))
    result = _value(app_ctx, db, no_progress, esi=esi)
    if not as_json:
        _say_valued(app_ctx, result)
    return result.as_dict()


def _value(
    app_ctx: AppContext,
    db: Database,
    no_progress: bool,
    *,
    esi: Any,
    recompute: bool = False,
    since: datetime | None = None,
) -> ValuesResult:
    """`compute_values` under a progress bar."""
    with _progress(app_ctx, no_progress, "valued") as progress:
        task = progress.add_task("valuing", total=None)
        return compute_values(
            db,
            app_ctx.settings.price_region_id,
            recompute=recompute,
            since=since,
            esi=esi,
            on_chunk=lambda n: progress.advance(task, n),
        )


def _say_valued(app_ctx: AppContext, result: ValuesResult) -> None:
    app_ctx.info(
        f"valued {result.valued} killmails ({result.unpriced_killmails} with unpriced "
        f"types, {result.with_fallback} priced partly from /markets/prices) in "
        f"{result.elapsed_s:.1f} s"
    )


def values_cmd(
    ctx: typer.Context,
    recompute: Annotated[
        bool, typer.Option("--recompute", help="Value every killmail again.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only killmails at or after this date (UTC)."),
    ] = None,
    no_fetch: Annotated[
        bool,
        typer.Option("--no-fetch", help="Do not ask ESI for types missing from the cache."),
    ] = False,
    as_json: JsonFlag = False,
    no_progress: NoProgress = False,
) -> None:
    """Value stored killmails in ISK at their own day's market (docs/valuation.md).

    Values the killmails without a value, with a value of an older method version, or
    whose prices changed since they were valued; --recompute values every one again.
    """
    app_ctx = app_context(ctx)
    since_at = parse_since(since)
    db = app_ctx.database()
    esi = None
    if not no_fetch:
        esi = make_esi(app_ctx.settings, db)
        app_ctx.on_close(lambda: close_esi(esi))
    result = _value(app_ctx, db, no_progress, esi=esi, recompute=recompute, since=since_at)
    if as_json:
        print_json("values", result.as_dict())
    else:
        _say_valued(app_ctx, result)
