"""The route -> group hints agree with CCP's OpenAPI document (when it is at hand)."""

from __future__ import annotations

import re

from killcli.esi.routes import ROUTE_GROUP_HINTS
from tests.conftest import shared_dir


def groups_by_path(text: str) -> dict[str, set[str]]:
    """``x-rate-limit`` groups per path, read line by line (no YAML parser needed)."""
    groups: dict[str, set[str]] = {}
    path = None
    in_limit = False
    for line in text.splitlines():
        if match := re.match(r"^  (/\S*):\s*$", line):
            path, in_limit = match.group(1), False
        elif line.strip() == "x-rate-limit:":
            in_limit = True
        elif in_limit and (match := re.match(r"^\s+group:\s*(\S+)", line)) and path:
            groups.setdefault(path, set()).add(match.group(1))
            in_limit = False
    return groups


def test_hints_match_the_openapi_x_rate_limit_groups() -> None:
    spec = shared_dir() / "esi" / "esi-openapi-2026-08-18.yaml"
    groups = groups_by_path(spec.read_text(encoding="utf-8"))
    templates = {
        path: re.sub(r"\{[a-z_]+_id\}", "{id}", path.replace("{killmail_hash}", "{hash}"))
        for path in groups
    }
    by_route = {templates[path]: found for path, found in groups.items()}
    for route, group in ROUTE_GROUP_HINTS.items():
        assert by_route[route] == {group}, route
