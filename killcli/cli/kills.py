"""`killsync kills` and `killsync show`: look at the stored killmails, with names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.tree import Tree

from killcli.cli import params
from killcli.cli.context import app_context, examples, print_json
from killcli.cli.params import JsonFlag
from killcli.console import make_console
from killcli.events.render import amount, isk_compact, value_total
from killcli.kills import DEFAULT_LIMIT, KillRow, Owner, Party, list_kills
from killcli.killview import ItemNode, KillmailView, flag_name, get_killmail_view
from killcli.textsafe import sanitize

DEFAULT_TOP_ATTACKERS = 10


def shown(name: str | None, entity_id: int | None) -> str:
    """A cached name, the bare id when the cache has none, ``-`` for no id at all."""
    if entity_id is None:
        return "-"
    return sanitize(name) if name else str(entity_id)


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _who(party: Party) -> str:
    """The character, else (a structure, an NPC) its corporation."""
    if party.character_id is not None:
        return shown(party.character_name, party.character_id)
    return shown(party.corporation_name, party.corporation_id)


def kills_table(rows: list[KillRow], *, marked: bool) -> Table:
    """The `kills` table; ``marked`` adds the kill/loss column of the chosen owner."""
    table = Table(
        *(["", "time"] if marked else ["time"]),
        "system",
        "victim",
        "corporation",
        "ship",
        "final blow",
        "ship",
        "attackers",
        "ISK",
        "killmail",
    )
    for row in rows:
        cells = [
            _when(row.killmail_time),
            _system(row),
            _who(row.victim),
            shown(row.victim.corporation_name, row.victim.corporation_id),
            shown(row.victim.ship_type_name, row.victim.ship_type_id),
            _who(row.final_blow),
            shown(row.final_blow.ship_type_name, row.final_blow.ship_type_id),
            str(row.attacker_count),
            _isk(row.value),
            str(row.killmail_id),
        ]
        table.add_row(*([str(row.side or "")] if marked else []), *cells)
    return table


def kills_cmd(
    ctx: typer.Context,
    character: Annotated[
        int | None,
        typer.Option(
            "--character",
            help="Only this character's kills and losses (victim or attacker), marked.",
            show_default=False,
            parser=params.character_id,
        ),
    ] = None,
    corporation: Annotated[
        int | None,
        typer.Option(
            "--corporation",
            help="Only this corporation's losses and the kills its list held, marked.",
            show_default=False,
            parser=params.corporation_id,
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            help="Only killmails at or after: a date (UTC), an ISO date-time, or 7d, 12h...",
            show_default=False,
            parser=params.since,
            metavar="DATE|DURATION",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", help="At most this many (1-10000).", parser=params.limit),
    ] = DEFAULT_LIMIT,
    as_json: JsonFlag = False,
) -> None:
    """The newest stored killmails with names: time, system, victim, final blow."""
    app_ctx = app_context(ctx)
    owner = Owner.of(character, corporation)
    result = list_kills(app_ctx.database(), owner=owner, since=since, limit=limit)
    if as_json:
        print_json("kills", result.as_dict())
        return
    make_console(stderr=False).print(kills_table(result.kills, marked=owner is not None))
    if not result.kills:
        app_ctx.info("no stored killmail matches")


# -- show -------------------------------------------------------------------------------


def security_label(security: float) -> str:
    """As the game shows it: one decimal, and never 0.0 for a low-security system."""
    return "0.1" if 0 < security < 0.05 else f"{round(security, 1):.1f}"


def _system(row: KillRow) -> str:
    name = shown(row.solar_system_name, row.solar_system_id)
    if row.security_status is None:
        return name
    return f"{name} {security_label(row.security_status)}"


def _isk(value: Mapping[str, Any] | None) -> str:
    total = value_total(value)
    return "-" if total is None else isk_compact(total)


def _name(names: Mapping[int, str | None], entity_id: int | None) -> str:
    return shown(names.get(entity_id) if entity_id is not None else None, entity_id)


def _attackers(view: KillmailView, top: int) -> Table:
    names = view.names
    attackers = view.attackers_by_damage()
    table = Table(
        "", "attacker", "corporation", "ship", "weapon", "damage", title="attackers by damage"
    )
    total = max(1, view.rows.killmail["victim_damage_taken"])
    for a in attackers[:top]:
        who = a["character_id"] or a["corporation_id"] or a["faction_id"]
        table.add_row(
            "final blow" if a["final_blow"] else "",
            _name(names, who),
            _name(names, a["corporation_id"]),
            _name(names, a["ship_type_id"]),
            _name(names, a["weapon_type_id"]),
            f"{a['damage_done']:,} ({100 * a['damage_done'] / total:.1f} %)",
        )
    if len(attackers) > top:
        table.caption = f"and {len(attackers) - top:,} more"
    return table


def _item_label(
    names: Mapping[int, str | None], row: Mapping[str, Any], values: Mapping[int, Decimal]
) -> str:
    parts = [_name(names, row["item_type_id"]), f"[{flag_name(row['flag'])}]"]
    if row["quantity_dropped"]:
        parts.append(f"dropped {row['quantity_dropped']:,}")
    if row["quantity_destroyed"]:
        parts.append(f"destroyed {row['quantity_destroyed']:,}")
    if row["position"] in values:
        parts.append(f"{isk_compact(values[row['position']])} ISK")
    return "  ".join(parts)


def _add_items(
    tree: Tree,
    nodes: list[ItemNode],
    names: Mapping[int, str | None],
    values: Mapping[int, Decimal],
) -> None:
    for node in nodes:
        branch = tree.add(_item_label(names, node.row, values))
        _add_items(branch, node.children, names, values)


def _value_line(value: Mapping[str, Any] | None) -> str:
    """``1.23b ISK (destroyed 1.00b, dropped 230.00m, fitted 1.10b; prices of 2026-11-30)``"""
    total = value_total(value)
    if value is None or total is None:
        return "not valued yet (see `killsync values`)"
    parts = [
        f"{key} {isk_compact(part)}"
        for key in ("destroyed", "dropped", "fitted")
        if (part := amount(value.get(key))) is not None
    ]
    unpriced = value.get("unpriced_type_ids") or []
    note = f", {len(unpriced)} type{'s' if len(unpriced) > 1 else ''} unpriced" if unpriced else ""
    return (
        f"{isk_compact(total)} ISK ({', '.join(parts)}; prices of "
        f"{sanitize(str(value.get('price_date')))}{note})"
    )


def render_killmail(view: KillmailView, *, top: int) -> RenderableType:
    """Header, victim, attackers by damage (top ones), the items as a tree."""
    km, names = view.rows.killmail, view.names
    header = (
        f"killmail {km['killmail_id']}  {_when(km['killmail_time'])}  "
        f"{_name(names, km['solar_system_id'])}  {_value_line(view.value)}"
    )
    who = _name(names, km["victim_corporation_id"])  # a structure: its corporation
    if km["victim_character_id"] is not None:
        who = f"{_name(names, km['victim_character_id'])} ({who})"
    victim = (
        f"victim: {who}, {_name(names, km['victim_ship_type_id'])}, "
        f"{km['victim_damage_taken']:,} damage taken"
    )
    items = Tree(f"items ({len(view.rows.items)})")
    _add_items(items, view.item_tree(), names, view.item_values)
    return Group(header, victim, _attackers(view, top), items)


def show_cmd(
    ctx: typer.Context,
    killmail_id: Annotated[
        int, typer.Argument(help="The killmail's id.", parser=params.killmail_id)
    ],
    top: Annotated[
        int,
        typer.Option(
            "--attackers", help="Show the top N attackers by damage.", parser=params.limit
        ),
    ] = DEFAULT_TOP_ATTACKERS,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the exact ESI body, the names and the value.")
    ] = False,
) -> None:
    """One stored killmail: victim, attackers by damage, items as a tree (exit 2: not stored)."""
    app_ctx = app_context(ctx)
    view = get_killmail_view(
        app_ctx.database(), killmail_id, region_id=app_ctx.settings.price_region_id
    )
    if as_json:
        print_json("show", view.as_dict())
        return
    make_console(stderr=False).print(render_killmail(view, top=top))


def register(root: typer.Typer) -> None:
    root.command(
        "kills",
        epilog=examples(
            "killsync kills",
            "killsync kills --character 2112345678 --since 7d",
            "killsync kills --corporation 98000001 --since 2026-11-01 --limit 200",
            "killsync kills --limit 1000 --json",
        ),
    )(kills_cmd)
    root.command(
        "show",
        epilog=examples(
            "killsync show 131234567",
            "killsync show 131234567 --attackers 50",
            "killsync show 131234567 --json   # the exact ESI body and the names",
        ),
    )(show_cmd)
