"""ESI killmail bodies <-> table rows, losslessly.

:func:`parse_killmail` validates one ESI body and flattens it into rows for
``killmails``, ``killmail_attackers`` and ``killmail_items``; :func:`build_killmail`
turns those rows back into the exact body. Fields this code does not know are kept
in the rows' ``extra`` so that nothing ESI sends is ever dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
MAX_EXTRA_DEPTH = 64  # nesting allowed inside fields this code does not know
_HASH = re.compile(r"[0-9A-Fa-f]{1,64}")

_ID_KEYS = ("character_id", "corporation_id", "alliance_id", "faction_id")
_KILLMAIL_KEYS = {
    "killmail_id",
    "killmail_time",
    "solar_system_id",
    "moon_id",
    "war_id",
    "victim",
    "attackers",
}
_VICTIM_KEYS = {*_ID_KEYS, "damage_taken", "ship_type_id", "position", "items"}
_ATTACKER_KEYS = {
    *_ID_KEYS,
    "damage_done",
    "final_blow",
    "security_status",
    "ship_type_id",
    "weapon_type_id",
}
_ITEM_KEYS = {
    "item_type_id",
    "flag",
    "singleton",
    "quantity_destroyed",
    "quantity_dropped",
    "items",
}
# Keys that archives (EVE Ref) put beside the ESI body; they are not part of it.
ARCHIVE_KEYS = frozenset({"killmail_hash", "http_last_modified"})


class KillmailError(ValueError):
    """A body that is not a valid ESI killmail; the message names the field."""


class BadJson(KillmailError):
    """Text that is not strict JSON; ``line``/``column`` locate it when known."""

    def __init__(self, reason: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(f"bad JSON: {reason}")
        self.line = line
        self.column = column


@dataclass(frozen=True)
class KillmailRows:
    """One killmail as table rows (dicts keyed by column name)."""

    killmail: dict[str, Any]
    attackers: list[dict[str, Any]]
    items: list[dict[str, Any]]

    @property
    def killmail_id(self) -> int:
        return int(self.killmail["killmail_id"])


# -- strict JSON ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _bad_json(exc: Exception) -> BadJson:
    """What :mod:`json` raises on hostile text, as one :class:`BadJson`."""
    if isinstance(exc, BadJson):
        return exc
    if isinstance(exc, json.JSONDecodeError):
        return BadJson(exc.msg, line=exc.lineno, column=exc.colno)
    if isinstance(exc, RecursionError):
        return BadJson("nested too deeply")
    if isinstance(exc, UnicodeDecodeError):
        return BadJson(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    # ValueError: an integer past the interpreter's 4300-digit limit
    return BadJson("integer too large" if "digits" in str(exc) else str(exc))


def loads_body(data: str | bytes) -> Any:
    """Parse one JSON text strictly: no ``NaN``/``Infinity``, bounded depth and integers.

    Depth past the interpreter's recursion limit and integers past its digit limit are
    reported as :class:`BadJson`; the tighter bounds (64-bit integers, finite floats,
    :data:`MAX_EXTRA_DEPTH`) are checked by :func:`parse_killmail`.
    """
    try:
        return _DECODER.decode(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (ValueError, RecursionError) as exc:
        raise _bad_json(exc) from exc


def decode_body(text: str, start: int) -> tuple[Any, int]:
    """The JSON value at ``text[start]`` and where it ends (strict, as :func:`loads_body`)."""
    try:
        return _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise _bad_json(exc) from exc


# -- validation helpers ------------------------------------------------------------


def _int(obj: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> int | None:
    value = obj.get(key)
    # Fast path first: a killmail has hundreds of ids and this runs for each of them.
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if value is None:
        if required:
            raise KillmailError(f"{path}{key}: missing")
        if key in obj:
            raise KillmailError(f"{path}{key}: null is not an integer")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise KillmailError(f"{path}{key}: expected an integer, got {type(value).__name__}")
    raise KillmailError(f"{path}{key}: {_shown(value)} does not fit in 64 bits")


def _shown(value: int | float) -> str:
    """A number for an error line: a 4000-digit integer is cut short."""
    text = str(value)
    return text if len(text) <= 30 else f"{text[:20]}... ({len(text)} digits)"


def _float(obj: Mapping[str, Any], key: str, path: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KillmailError(f"{path}{key}: expected a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise KillmailError(f"{path}{key}: {_shown(value)} is not a finite number")
    return number


def _list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise KillmailError(f"{path}{key}: expected a list")
    return value


def _dict(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise KillmailError(f"{path}: expected an object")
    return value


def _extra(obj: Mapping[str, Any], known: set[str], path: str = "") -> dict[str, Any] | None:
    if obj.keys() <= known:  # the usual case, checked in C
        return None
    extra = {k: v for k, v in obj.items() if k not in known}
    for key, value in extra.items():
        _check_json_value(value, f"{path}{key}")
    return extra or None


def _check_json_value(value: Any, path: str) -> None:
    """An unknown field must store and export as standard JSON: finite, 64-bit, shallow.

    Iterative, so a deep value cannot exhaust the stack while it is being rejected.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_EXTRA_DEPTH:
                raise KillmailError(f"{path}: nested deeper than {MAX_EXTRA_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            raise KillmailError(f"{path}: {item} is not a finite number")
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not INT64_MIN <= item <= INT64_MAX
        ):
            raise KillmailError(f"{path}: an integer does not fit in 64 bits")


def parse_time(value: Any, path: str = "killmail_time") -> datetime:
    if not isinstance(value, str):
        raise KillmailError(f"{path}: expected a date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise KillmailError(f"{path}: not a date-time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise KillmailError(f"{path}: no time zone in {value!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise KillmailError(f"{path}: {value!r} is out of range in UTC") from exc


def format_time(value: datetime) -> str:
    """ESI's form, ``2026-01-02T03:04:05Z``; four-digit years even before year 1000."""
    text = value.astimezone(UTC).isoformat(
        timespec="microseconds" if value.microsecond else "seconds"
    )
    return text.removesuffix("+00:00") + "Z"


# -- body -> rows -------------------------------------------------------------------


def parse_killmail(body: Any, *, killmail_hash: str | None = None) -> KillmailRows:
    """Validate an ESI killmail body and flatten it into rows."""
    km = _dict(body, "killmail")
    killmail_id = _int(km, "killmail_id", "")
    if killmail_hash is not None and not _HASH.fullmatch(killmail_hash):
        raise KillmailError("killmail_hash: expected up to 64 hexadecimal digits")
    victim = _dict(km.get("victim"), "victim")
    attackers_in = _list(km, "attackers", "")
    position = victim.get("position")
    pos = _dict(position, "victim.position") if position is not None else None
    extra = {
        "killmail": _extra(km, _KILLMAIL_KEYS),
        "victim": _extra(victim, _VICTIM_KEYS, "victim."),
        "position": _extra(pos, {"x", "y", "z"}, "victim.position.") if pos is not None else None,
    }
    attackers = [_attacker_row(killmail_id, i, a) for i, a in enumerate(attackers_in)]
    final_blow = next((a["character_id"] for a in attackers if a["final_blow"]), None)
    items = _item_rows(killmail_id, victim)
    row = {
        "killmail_id": killmail_id,
        "killmail_hash": killmail_hash,
        "killmail_time": parse_time(km.get("killmail_time")),
        "solar_system_id": _int(km, "solar_system_id", ""),
        "moon_id": _int(km, "moon_id", "", required=False),
        "war_id": _int(km, "war_id", "", required=False),
        "victim_character_id": _int(victim, "character_id", "victim.", required=False),
        "victim_corporation_id": _int(victim, "corporation_id", "victim.", required=False),
        "victim_alliance_id": _int(victim, "alliance_id", "victim.", required=False),
        "victim_faction_id": _int(victim, "faction_id", "victim.", required=False),
        "victim_ship_type_id": _int(victim, "ship_type_id", "victim."),
        "victim_damage_taken": _int(victim, "damage_taken", "victim."),
        "position_x": _float(pos, "x", "victim.position.") if pos is not None else None,
        "position_y": _float(pos, "y", "victim.position.") if pos is not None else None,
        "position_z": _float(pos, "z", "victim.position.") if pos is not None else None,
        "victim_has_items": "items" in victim,
        "attacker_count": len(attackers),
        "final_blow_character_id": final_blow,
        "extra": {k: v for k, v in extra.items() if v} or None,
    }
    return KillmailRows(row, attackers, items)


def _attacker_row(killmail_id: int | None, index: int, raw: Any) -> dict[str, Any]:
    path = f"attackers[{index}]."
    a = _dict(raw, path[:-1])
    final_blow = a.get("final_blow")
    if not isinstance(final_blow, bool):
        raise KillmailError(f"{path}final_blow: expected true or false")
    return {
        "killmail_id": killmail_id,
        "position": index,
        **{key: _int(a, key, path, required=False) for key in _ID_KEYS},
        "damage_done": _int(a, "damage_done", path),
        "final_blow": final_blow,
        "security_status": _float(a, "security_status", path),
        "ship_type_id": _int(a, "ship_type_id", path, required=False),
        "weapon_type_id": _int(a, "weapon_type_id", path, required=False),
        "extra": _extra(a, _ATTACKER_KEYS, path),
    }


def _item_rows(killmail_id: int | None, victim: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "items" not in victim:
        return rows
    for index, raw in enumerate(_list(victim, "items", "victim.")):
        path = f"victim.items[{index}]"
        item = _dict(raw, path)
        parent = len(rows)
        rows.append(_item_row(killmail_id, parent, None, item, path + "."))
        if "items" in item:
            for child_index, child in enumerate(_list(item, "items", path + ".")):
                child_path = f"{path}.items[{child_index}]"
                child_item = _dict(child, child_path)
                if "items" in child_item:
                    raise KillmailError(f"{child_path}.items: items nest one level only")
                rows.append(_item_row(killmail_id, len(rows), parent, child_item, child_path + "."))
    return rows


def _item_row(
    killmail_id: int | None, position: int, parent: int | None, item: Mapping[str, Any], path: str
) -> dict[str, Any]:
    return {
        "killmail_id": killmail_id,
        "position": position,
        "parent_position": parent,
        "item_type_id": _int(item, "item_type_id", path),
        "flag": _int(item, "flag", path),
        "singleton": _int(item, "singleton", path),
        "quantity_destroyed": _int(item, "quantity_destroyed", path, required=False),
        "quantity_dropped": _int(item, "quantity_dropped", path, required=False),
        "has_children": "items" in item,
        "extra": _extra(item, _ITEM_KEYS, path),
    }


# -- rows -> body -------------------------------------------------------------------


def esi_number(value: float) -> float | int:
    """ESI (a Go service) writes integral floats without a fraction: ``5``, not ``5.0``."""
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def _put_ids(out: dict[str, Any], row: Mapping[str, Any], prefix: str = "") -> None:
    for key in _ID_KEYS:
        value = row[prefix + key]
        if value is not None:
            out[key] = value


def _sorted(obj: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra:
        obj.update(extra)
    return {key: obj[key] for key in sorted(obj)}


def build_killmail(
    killmail: Mapping[str, Any],
    attackers: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The ESI body for stored rows (attackers and items ordered by position)."""
    extra = killmail["extra"] or {}
    victim: dict[str, Any] = {
        "damage_taken": killmail["victim_damage_taken"],
        "ship_type_id": killmail["victim_ship_type_id"],
    }
    _put_ids(victim, killmail, "victim_")
    if killmail["position_x"] is not None:
        victim["position"] = _sorted(
            {axis: esi_number(killmail[f"position_{axis}"]) for axis in "xyz"},
            extra.get("position"),
        )
    if killmail["victim_has_items"]:
        victim["items"] = _build_items(items)
    body: dict[str, Any] = {
        "attackers": [_build_attacker(a) for a in attackers],
        "killmail_id": killmail["killmail_id"],
        "killmail_time": format_time(killmail["killmail_time"]),
        "solar_system_id": killmail["solar_system_id"],
        "victim": _sorted(victim, extra.get("victim")),
    }
    for key in ("moon_id", "war_id"):
        if killmail[key] is not None:
            body[key] = killmail[key]
    return _sorted(body, extra.get("killmail"))


def _build_attacker(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "damage_done": row["damage_done"],
        "final_blow": bool(row["final_blow"]),
        "security_status": esi_number(row["security_status"]),
    }
    _put_ids(out, row)
    for key in ("ship_type_id", "weapon_type_id"):
        if row[key] is not None:
            out[key] = row[key]
    return _sorted(out, row["extra"])


def _build_items(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    top: list[dict[str, Any]] = []
    by_position: dict[int, dict[str, Any]] = {}
    for row in rows:
        item: dict[str, Any] = {
            "flag": row["flag"],
            "item_type_id": row["item_type_id"],
            "singleton": row["singleton"],
        }
        for key in ("quantity_destroyed", "quantity_dropped"):
            if row[key] is not None:
                item[key] = row[key]
        if row["has_children"]:
            item["items"] = []
        item = _sorted(item, row["extra"])
        by_position[row["position"]] = item
        if row["parent_position"] is None:
            top.append(item)
        else:
            by_position[row["parent_position"]]["items"].append(item)
    return top


def canonical_json(body: Any) -> str:
    """One stable text for a body: sorted keys, no spaces, integral floats as integers."""
    return json.dumps(_canonical(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return esi_number(value)
    return value
