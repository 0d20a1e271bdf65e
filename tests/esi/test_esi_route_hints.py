"""The route -> group hints agree with CCP's OpenAPI document (tests/data/openapi)."""

from __future__ import annotations

import re
from typing import Any

from killcli.esi.routes import ROUTE_GROUP_HINTS
from tests.refdata import REDERIVE, openapi_2026


def groups_by_path(doc: dict[str, Any]) -> dict[str, set[str]]:
    """``x-rate-limit`` groups per path (over its operations); paths without one left out."""
    groups: dict[str, set[str]] = {}
    for path, item in doc["paths"].items():
        for operation in item.values():
            if "x-rate-limit" in operation:
                groups.setdefault(path, set()).add(operation["x-rate-limit"]["group"])
    return groups


def test_hints_match_the_openapi_x_rate_limit_groups() -> None:
    groups = groups_by_path(openapi_2026())
    templates = {
        path: re.sub(r"\{[a-z_]+_id\}", "{id}", path.replace("{killmail_hash}", "{hash}"))
        for path in groups
    }
    by_route = {templates[path]: found for path, found in groups.items()}
    for route, group in ROUTE_GROUP_HINTS.items():
        assert route in by_route, f"{route} is not in the derived document: {REDERIVE}"
        assert by_route[route] == {group}, route
