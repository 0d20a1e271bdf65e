"""The `--json` contract: every command's envelope and the keys of its payload.

Scripts parse these payloads, so a key that disappears or is renamed is a breaking change
(bump ``JSON_SCHEMA_VERSION`` and say so in the CHANGELOG); a new key is not. Each command
runs through the real entry point against the simulator, and the test checks what it
printed against the contract below: every object has exactly the contract's keys
(recursively), every element of a list matches the contract's one element, ``""`` is any
scalar and ``"*"`` anything. To change the contract on purpose, edit ``CONTRACT``.
`demo --json` is checked by tests/test_demo.py (it runs its own simulator); `sim serve`
and `events relay` (RabbitMQ only) print one small object each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from killcli.accounts import CORPORATION_LOGIN_SCOPES, KILLMAIL_SCOPE
from killcli.cli.context import JSON_SCHEMA_VERSION
from killsim.market import Market, write_history_archives
from tests.conftest import CliResult, sim_environ

Cli = Callable[..., CliResult]
Shape = dict[str, Any] | list[Any] | str
ANY = "*"  # an open map (keyed by data: statuses, bucket names) or a value of any shape


def mismatches(value: Any, expected: Shape, path: str = "data") -> list[str]:
    """Where ``value`` breaks the contract ``expected`` (empty: it keeps it)."""
    if expected == ANY:
        return []
    if isinstance(expected, dict):
        if not isinstance(value, dict):
            return [f"{path}: an object was promised, got {type(value).__name__}"]
        problems = [f"{path}: key {k!r} is gone" for k in sorted(set(expected) - set(value))]
        problems += [f"{path}: new key {k!r}" for k in sorted(set(value) - set(expected))]
        for key in sorted(set(expected) & set(value)):
            problems += mismatches(value[key], expected[key], f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(value, list):
            return [f"{path}: a list was promised, got {type(value).__name__}"]
        return [
            p for i, item in enumerate(value) for p in mismatches(item, expected[0], f"{path}[{i}]")
        ]
    if isinstance(value, dict | list):
        return [f"{path}: a scalar was promised, got {type(value).__name__}"]
    return []


def run_json(cli: Cli, *args: str, stdin: str | None = None) -> dict[str, Any]:
    result = cli(*args, "--json", stdin=stdin)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    envelope: dict[str, Any] = json.loads(result.stdout)
    assert set(envelope) == {"kind", "version", "data"}
    assert envelope["version"] == JSON_SCHEMA_VERSION
    return envelope


@pytest.fixture
def world(
    start_sim: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> Any:
    sim = start_sim("smoke", characters=2, killmails=20, corporations=1)
    env = sim_environ(sim, tmp_path / "home", f"sqlite:///{tmp_path / 'k.db'}")
    env["KILLSYNC_BROKER_URL"] = "database"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli("db", "upgrade").exit_code == 0
    return sim


def test_every_json_payload_keeps_its_keys(world: Any, cli: Cli, tmp_path: Path) -> None:
    ids = sorted(world.world.ground_truth())
    [(corporation_id, corporation)] = world.world.corporations().items()
    [director] = corporation.director_ids  # logs in with the corporation scopes
    tokens = "".join(
        world.issue_refresh_token(
            c, CORPORATION_LOGIN_SCOPES if c == director else (KILLMAIL_SCOPE,)
        )
        + "\n"
        for c in ids
    )
    seen: dict[str, Any] = {}

    def record(*args: str, stdin: str | None = None) -> None:
        envelope = run_json(cli, *args, stdin=stdin)
        seen[envelope["kind"]] = envelope["data"]

    record("db", "status")
    record("config", "show")
    record("users", "import", "-", stdin=tokens)
    record("users", "list")
    record("corporations", "list")
    record("corporations", "check")
    record("queue")  # the new corporation among the lists it queues
    assert seen["queue"]["corporations"] and seen["queue"]["characters"]
    record("sync-corporation", str(corporation_id))
    record("refresh-token", "--all")
    record("sync-user", str(ids[0]))
    assert cli("worker", "--drain").exit_code == 0
    record("stats")
    record("secrets", "status")
    record("secrets", "rotate")
    hook = "http://127.0.0.1:9/api/webhooks/1/x\n"  # nothing listens: the post fails
    selection = ("--character", str(ids[0]), "--kills-only", "--system", "30000142")
    added = cli("webhooks", "add", "discord", "-", "--allow-insecure", *selection, stdin=hook)
    assert added.exit_code == 0, added.stderr
    record("webhooks", "list")
    record("webhooks", "deliver", "--once")
    record("events", "prune", "--older-than", "7d")
    record("kills", "--character", str(ids[0]))
    record("show", str(seen["kills"]["kills"][0]["killmail_id"]))
    out = tmp_path / "all.jsonl"
    assert cli("export", "--output", str(out)).exit_code == 0
    record("import", str(out))
    market = Market(world.world.item_types())
    today = world.clock.now().date()
    days = [today - timedelta(days=n) for n in range(3)]
    write_history_archives(tmp_path / "prices", market, days, compress_level=1)
    record("prices", "import", str(tmp_path / "prices"))
    record("prices", "sync", "--days", "30")
    record("values")
    assert sorted(seen) == sorted(CONTRACT)
    problems = [p for kind, data in seen.items() for p in mismatches(data, CONTRACT[kind], kind)]
    assert problems == []


def test_the_contract_check_sees_gone_new_and_reshaped_keys() -> None:
    promised: Shape = {"a": "", "b": [{"c": ""}], "m": ANY}
    assert mismatches({"a": 1, "b": [{"c": 2}, {"c": 3}], "m": {"x": 1}}, promised) == []
    assert mismatches({"a": 1, "b": [], "m": 0, "z": 1}, promised) == ["data: new key 'z'"]
    assert mismatches({"b": [{"c": 1}, {}], "m": 0, "a": {}}, promised) == [
        "data.a: a scalar was promised, got dict",
        "data.b[1]: key 'c' is gone",
    ]


FIGURES: Shape = dict.fromkeys(
    [
        "already",
        "claims_taken_over",
        "elapsed_s",
        "fetched",
        "found",
        "linked",
        "list_restarts",
        "names_resolved",
        "new",
        "not_modified",
        "pages",
        "pending",
        "pending_retried",
        "shared_elsewhere",
        "shared_inflight",
        "skipped_cache",
    ],
    "",
) | {"tokens": ANY}


def scalars(*keys: str) -> dict[str, Shape]:
    return dict.fromkeys(keys, "")


VALUES = scalars("changes_covered", "elapsed_s", "unpriced_killmails", "valued", "with_fallback")
PARTY = scalars(
    "character_id",
    "character_name",
    "corporation_id",
    "corporation_name",
    "ship_type_id",
    "ship_type_name",
)


CONTRACT: dict[str, Shape] = {
    "db.status": scalars("current", "head", "newer_than_killsync", "up_to_date"),
    "config": {"config_file": "", "settings": [scalars("env", "key", "source", "value")]},
    "users.import": scalars("added", "rejected", "updated"),
    "users": [
        scalars(
            "access_expires_at",
            "character_id",
            "killmails",
            "last_error",
            "last_sync_at",
            "name",
            "pending",
            "status",
            "status_reason",
        )
        | {
            "scopes": [""],
            "corporation": scalars("corporation_id", "roles_expires_at", "status", "status_reason"),
        }
    ],
    "corporations": [
        scalars(
            "corporation_id",
            "directors_total",
            "directors_usable",
            "enabled",
            "killmails",
            "last_error",
            "last_sync_at",
            "name",
            "status",
            "status_reason",
        )
    ],
    "corporations.check": [
        scalars("character_id", "corporation_id", "reason", "status", "tracked")
    ],
    "refresh": [scalars("character_id", "expires_at", "name", "ok", "reason", "retryable")],
    "queue": scalars("already_queued", "dry_run", "due", "queued")
    | {
        "characters": [scalars("character_id", "name", "priority", "reason", "tier")],
        "corporations": [scalars("corporation_id", "name", "priority", "reason", "tier")],
    },
    "sync": scalars("character_id", "character_name", "status")
    | {"figures": FIGURES, "new_killmail_ids": [""], "pending_reasons": [ANY]},
    "sync.corporation": scalars("corporation_id", "corporation_name", "status")
    | {
        "figures": FIGURES,
        "directors_used": [""],
        "directors_dropped": [""],
        "new_killmail_ids": [""],
        "pending_reasons": [ANY],
    },
    "stats": scalars(
        "dead_letters",
        "killmails_last_day",
        "killmails_last_hour",
        "killmails_total",
        "oldest_last_sync_at",
        "pending_total",
    )
    | {
        "cadence": scalars("base_interval_s", "saved_requests_per_day", "spec")
        | {
            "tiers": [
                scalars(
                    "characters",
                    "interval_s",
                    "requests_per_day",
                    "saved_requests_per_day",
                    "tier",
                )
            ]
        },
        "characters": [
            scalars(
                "character_id",
                "killmails",
                "last_error",
                "last_sync_at",
                "name",
                "pending",
                "status",
            )
        ],
        "characters_by_status": ANY,
        "corporations_by_status": ANY,
        "egress": [
            scalars("blocked_for_s", "budget", "egress", "holders", "in_use", "limit", "window_s")
        ],
        "last_run": scalars("character_id", "corporation_id", "finished_at", "status")
        | {"figures": FIGURES},
        "queue": scalars("consumers", "dead_letters", "delayed", "ready", "running"),
        "workers": [ANY],
        "activity": scalars("days", "isk_destroyed", "isk_lost", "valued")
        | {
            "daily": [scalars("day", "isk_destroyed", "isk_lost", "kills", "losses")],
            "top_ships": [scalars("kills", "losses", "ship_type_id", "ship_type_name")],
        },
    },
    "secrets.status": scalars("keys", "old_keys_unused", "on_first_key", "total", "undecryptable")
    | {"kinds": [scalars("kind", "total", "undecryptable") | {"by_key": [""]}]},
    "secrets.rotate": scalars(
        "changed", "keys", "old_keys_unused", "on_first_key", "rotated", "total", "undecryptable"
    )
    | {"kinds": [scalars("changed", "current", "kind", "rotated", "total", "undecryptable")]},
    "webhooks": [
        scalars(
            "blocked_until",
            "character_id",
            "created_at",
            "cursor_event_id",
            "enabled",
            "id",
            "kind",
            "last_error",
            "max_age_s",
            "url",
            "corporation_id",
            "delay_s",
        )
        | {"filters": {"side": "", "systems": [""]}}
    ],
    "webhooks.deliver": scalars("disabled", "failed", "posted", "rounds", "skipped"),
    "events.prune": scalars("deleted", "remaining"),
    "kills": scalars("character_id", "corporation_id", "limit", "since")
    | {
        "kills": [
            scalars(
                "attacker_count",
                "killmail_id",
                "killmail_time",
                "region_id",
                "security_status",
                "side",
                "solar_system_id",
                "solar_system_name",
            )
            | {
                "victim": PARTY,
                "final_blow": PARTY,
                "value": ANY,  # null until valued, then export --values' value object
            }
        ]
    },
    "show": {"killmail": ANY, "names": ANY, "value": ANY},  # ESI's body, {id: name}
    "import": scalars("already_present", "new", "read", "rejected"),
    "prices.import": scalars(
        "elapsed_s",
        "failed_files",
        "files",
        "other_regions",
        "rejected_rows",
        "rows",
        "rows_per_s",
        "skipped_files",
        "types",
    )
    | {"values": VALUES},  # null with --no-values (or another region's prices)
    "prices.sync": scalars(
        "elapsed_s",
        "fetched",
        "fresh",
        "market_prices",
        "paced_s",
        "region_id",
        "rows",
        "stopped",
        "types_needed",
        "without_history",
    )
    | {"values": VALUES},  # null with --no-values
    "values": VALUES,
}
