"""Write stored killmails back out as ESI bodies (JSON lines or a JSON array)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import IO, Any, Literal

from killcli.db import Database
from killcli.db.store import iter_killmail_bodies

ExportFormat = Literal["jsonl", "json"]


def dumps_body(body: dict[str, Any], *, indent: int | None = None) -> str:
    """A body as ESI writes it: UTF-8 text, keys in ESI's (alphabetical) order."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(body, ensure_ascii=False, indent=indent, separators=separators)


def export_killmails(
    db: Database,
    out: IO[str],
    *,
    fmt: ExportFormat = "jsonl",
    character_id: int | None = None,
    since: datetime | None = None,
) -> int:
    """Stream killmails to ``out``; returns how many were written."""
    count = 0
    with db.session() as session:
        bodies = iter_killmail_bodies(session, character_id=character_id, since=since)
        if fmt == "json":
            out.write("[")
        for body in bodies:
            if fmt == "json":
                out.write(",\n" if count else "\n")
                out.write(dumps_body(body))
            else:
                out.write(dumps_body(body) + "\n")
            count += 1
        if fmt == "json":
            out.write("\n]\n" if count else "]\n")
    return count
