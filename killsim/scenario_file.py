"""Scenario files: TOML with the keys of :class:`~killsim.scenario.Scenario`.

::

    base = "smoke"              # optional: start from a named scenario
    name = "my-test"
    seed = 7
    characters = 6
    page_size = 20

    [buckets]                   # group = "TOKENS/WINDOW" (s, m, h) or [tokens, window_s]
    char-killmail = "30/10s"
    killmail = [600, 2]

    [faults]
    server_error_rate = { body = 0.05 }
    latency_ms = 10
    downtime_s = [5, 8]

Every problem is reported as one :class:`~killsim.errors.ScenarioFileError` naming the
file and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from killsim.errors import ScenarioError, ScenarioFileError
from killsim.scenario import FAULT_FIELDS, SCENARIO_FIELDS, FaultPlan, Scenario, parse_limit


def load_scenario_file(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ScenarioFileError(f"scenario file {path}: not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError(f"scenario file {path}: cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError(f"scenario file {path}: not valid TOML ({exc})") from exc
    try:
        return scenario_from_mapping(data, default_name=path.stem)
    except ScenarioError as exc:
        raise ScenarioFileError(f"scenario file {path}: {exc}") from exc


def scenario_from_mapping(data: dict[str, Any], *, default_name: str = "custom") -> Scenario:
    """A scenario from parsed TOML; :class:`ScenarioError` names the bad key."""
    data = dict(data)
    base_name = data.pop("base", None)
    if base_name is not None and not isinstance(base_name, str):
        raise ScenarioError("base: must be the name of a scenario")
    seed = data.get("seed", 1)
    _check_type("seed", seed, int)
    base = Scenario.named(base_name, seed=seed) if base_name else Scenario(name=default_name)
    unknown = sorted(set(data) - SCENARIO_FIELDS)
    if unknown:
        raise ScenarioError(f"unknown key {unknown[0]!r}")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key == "buckets":
            changes[key] = _buckets(value)
        elif key == "faults":
            changes[key] = _faults(value, base.faults)
        else:
            changes[key] = _plain(key, value)
    try:
        return replace(base, **changes)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ScenarioError(str(exc)) from exc


def _check_type(key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
        raise ScenarioError(f"{key}: expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ScenarioError(f"{key}: expected {_kind_name(kind)}, got {type(value).__name__}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


_EXPECTED: Mapping[str, type | tuple[type, ...]] = MappingProxyType(
    {
        "name": str,
        "description": str,
        "client_kind": str,
        "signing": str,
        "client_id": str,
        "client_secret": str,
        "callback_url": str,
        "rotate_refresh_tokens": bool,
        "hostile_names": bool,
        "shared_fraction": (int, float),
        "npc_final_blow_fraction": (int, float),
        "structure_fraction": (int, float),
        "untracked_kill_fraction": (int, float),
        "role_error": str,
        "corporation_members": list,
        "directors_per_corporation": (int, list),
        "untracked_members": (int, list),
        "app_scopes": list,
    }
)


def _plain(key: str, value: Any) -> Any:
    _check_type(key, value, _EXPECTED.get(key, int))
    if key in ("corporation_members", "directors_per_corporation", "untracked_members"):
        if isinstance(value, int):
            return value
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
            raise ScenarioError(f"{key}: expected a whole number or a list of them")
        return tuple(value)
    if key == "app_scopes":
        if not all(isinstance(s, str) for s in value):
            raise ScenarioError("app_scopes: expected a list of strings")
        return tuple(value)
    if key in (
        "shared_fraction",
        "npc_final_blow_fraction",
        "structure_fraction",
        "untracked_kill_fraction",
    ):
        return float(value)
    return value


def _buckets(value: Any) -> dict[str, tuple[int, int]]:
    _check_type("buckets", value, dict)
    out: dict[str, tuple[int, int]] = {}
    for group, spec in value.items():
        if isinstance(spec, str):
            out[group] = parse_limit(spec)
        elif (
            isinstance(spec, list)
            and len(spec) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in spec)
        ):
            out[group] = (spec[0], spec[1])
        else:
            raise ScenarioError(f'buckets.{group}: expected "TOKENS/WINDOW" or [tokens, window_s]')
    return out


def _faults(value: Any, base: FaultPlan) -> FaultPlan:
    _check_type("faults", value, dict)
    unknown = sorted(set(value) - FAULT_FIELDS)
    if unknown:
        raise ScenarioError(f"unknown key 'faults.{unknown[0]}'")
    changes: dict[str, Any] = {}
    for key, item in value.items():
        name = f"faults.{key}"
        if key == "server_error_rate":
            _check_type(name, item, dict)
            for route, rate in item.items():
                _check_type(f"{name}.{route}", rate, (int, float))
            changes[key] = {route: float(rate) for route, rate in item.items()}
        elif key == "routes":
            _check_type(name, item, list)
            changes[key] = tuple(str(r) for r in item)
        elif key == "downtime_s":
            if not (
                isinstance(item, list)
                and len(item) == 2
                and all(isinstance(n, int | float) and not isinstance(n, bool) for n in item)
            ):
                raise ScenarioError(f"{name}: expected [start_s, end_s]")
            changes[key] = (float(item[0]), float(item[1]))
        elif key == "error_message":
            _check_type(name, item, str)
            changes[key] = item
        else:
            _check_type(name, item, (int, float))
            changes[key] = float(item)
    return replace(base, **changes)
