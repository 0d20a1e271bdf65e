"""Bar charts for `killsync stats`: kills and losses per day, and the top victim ships.

Bars are block characters in a Rich table (one row a day, the longest bar
:data:`BAR_WIDTH` cells), so a pipe or a log shows them as well as a terminal does.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from killcli.events.render import isk_compact
from killcli.textsafe import sanitize

BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: int, largest: int, width: int = BAR_WIDTH) -> str:
    """``value`` as a bar of ``width`` cells at most (``largest`` fills them), in eighths
    of a cell; any value above zero shows at least a sliver."""
    if value <= 0 or largest <= 0:
        return ""
    eighths = max(1, round(8 * width * value / largest))
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def activity_chart(activity: dict[str, Any]) -> RenderableType:
    """Kills (green) and losses (red) per day, the ISK destroyed and lost once killmails
    are valued, then the top victim ships."""
    daily = activity["daily"]
    valued = activity["valued"] > 0
    largest = max([max(d["kills"], d["losses"]) for d in daily] or [0])
    days = Table(
        "day",
        "kills",
        "",
        "losses",
        "",
        *(["ISK destroyed", "ISK lost"] if valued else []),
        title=f"kills and losses per day, last {activity['days']} days (UTC)",
    )
    for d in daily:
        days.add_row(
            d["day"],
            str(d["kills"]),
            Text(bar(d["kills"], largest), style="green"),
            str(d["losses"]),
            Text(bar(d["losses"], largest), style="red"),
            *([_isk(d["isk_destroyed"]), _isk(d["isk_lost"])] if valued else []),
        )
    if valued:
        days.caption = (
            f"ISK of the {activity['valued']:,} valued killmails: destroyed "
            f"{_isk(activity['isk_destroyed'])}, lost {_isk(activity['isk_lost'])}"
        )
    ships = Table("ship", "kills", "losses", title="top ships destroyed, same days")
    for s in activity["top_ships"]:
        name = sanitize(s["ship_type_name"]) if s["ship_type_name"] else str(s["ship_type_id"])
        ships.add_row(name, str(s["kills"]), str(s["losses"]))
    return Group(days, ships)


def _isk(text: str) -> str:
    return isk_compact(Decimal(text))
