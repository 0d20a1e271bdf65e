"""`killsync show`: one stored killmail for a person, and its exact ESI body.

The body is rebuilt from the rows exactly as `killsync export` writes it
(:func:`killcli.db.store.get_killmail_rows` + :func:`killcli.killmail.build_killmail`);
names come from the cache (never from ESI). Attackers are ordered by damage (most first,
ESI's order among equals); items form a tree (containers and ships in a hangar hold their
contents), in ESI's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from killcli.db import Database
from killcli.db.store import get_killmail_rows
from killcli.errors import UsageError
from killcli.killmail import KillmailRows, build_killmail
from killcli.sync.names import ids_to_name, read_names
from killcli.values import get_values, item_values_of

#: Inventory flags a person recognises (ESI's ``flag``); others are shown as numbers.
FLAG_NAMES: dict[int, str] = {
    5: "cargo",
    87: "drone bay",
    88: "booster",
    89: "implant",
    90: "ship hangar",
    133: "fuel bay",
    134: "ore hold",
    158: "fighter bay",
    164: "structure service",
}
_SLOT_RANGES = (
    (11, 18, "low slot"),
    (19, 26, "mid slot"),
    (27, 34, "high slot"),
    (92, 99, "rig slot"),
    (125, 132, "subsystem"),
    (159, 163, "fighter tube"),
)


def flag_name(flag: int) -> str:
    """``low slot 3``, ``cargo``, ``flag 177``."""
    if flag in FLAG_NAMES:
        return FLAG_NAMES[flag]
    for low, high, name in _SLOT_RANGES:
        if low <= flag <= high:
            return f"{name} {flag - low + 1}"
    return f"flag {flag}"


@dataclass(frozen=True)
class ItemNode:
    """One item row with the rows it contains (one level deep, as ESI nests them)."""

    row: dict[str, Any]
    children: list[ItemNode] = field(default_factory=list)


@dataclass(frozen=True)
class KillmailView:
    """One killmail: its exact body, its rows, the cached names of its ids."""

    body: dict[str, Any]
    rows: KillmailRows
    names: dict[int, str | None]
    #: its stored ISK value (``killmail_values``, :mod:`killcli.values`); None until valued
    value: dict[str, Any] | None = None
    #: each item row's value by position, at the killmail's day (valued killmails only)
    item_values: dict[int, Decimal] = field(default_factory=dict)

    def attackers_by_damage(self) -> list[dict[str, Any]]:
        """Most damage first; equal damage keeps ESI's order."""
        return sorted(self.rows.attackers, key=lambda a: -int(a["damage_done"]))

    def item_tree(self) -> list[ItemNode]:
        """Top-level items in ESI's order, each with its contents."""
        nodes: dict[int, ItemNode] = {}
        top: list[ItemNode] = []
        for row in self.rows.items:
            node = ItemNode(row)
            nodes[row["position"]] = node
            parent = row["parent_position"]
            (top if parent is None else nodes[parent].children).append(node)
        return top

    def as_dict(self) -> dict[str, Any]:
        """The ``show --json`` payload: the exact body, every id's name (null: unknown)."""
        return {
            "killmail": self.body,
            "names": {str(i): self.names.get(i) for i in sorted(ids_to_name(self.rows))},
            "value": self.value,
        }


def get_killmail_view(
    db: Database, killmail_id: int, *, region_id: int | None = None
) -> KillmailView:
    """The stored killmail ``killmail_id``; :class:`UsageError` when it is not stored.
    With ``region_id`` (the price region), a valued killmail's items get their values."""
    with db.session() as session:
        rows = get_killmail_rows(session, killmail_id)
        value = get_values(session, [killmail_id]).get(killmail_id)
        items = (
            item_values_of(session, region_id, rows)
            if rows is not None and value is not None and region_id is not None
            else {}
        )
    if rows is None:
        raise UsageError(f"no killmail {killmail_id} in the database", hint="see `killsync kills`")
    body = build_killmail(rows.killmail, rows.attackers, rows.items)
    return KillmailView(
        body,
        rows,
        read_names(db, ids_to_name(rows)),
        None if value is None else value.as_dict(),
        items,
    )
