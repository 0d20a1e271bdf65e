"""Helpers for the simulator's tests: paths, OpenAPI validation, URL builders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from killsim import SimServer

REPO = Path(__file__).resolve().parents[2]
#: ``make_sim(scenario_or_name, clock=None, seed=1) -> SimServer`` (see conftest).
SimFactory = Callable[..., SimServer]
CLIENT_HEADERS = {
    "User-Agent": "killsync-tests/0 (tests@example.org)",
    "X-Compatibility-Date": "2025-08-26",
}


class OpenApi:
    """An ESI OpenAPI document with JSON-schema validation of its component schemas."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource("urn:esi", resource)

    def schema(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = self.doc["components"]["schemas"][name]
        return schema

    def response_schema_name(self, path: str, method: str = "get") -> str:
        content = self.doc["paths"][path][method]["responses"]["200"]["content"]
        ref: str = content["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[-1]

    def documented_headers(self, path: str, method: str = "get") -> set[str]:
        return set(self.doc["paths"][path][method]["responses"]["200"].get("headers", {}))

    def validate(self, name: str, instance: Any) -> None:
        """Raise ``jsonschema.ValidationError`` unless ``instance`` fits the schema."""
        validator = Draft202012Validator(
            {"$ref": f"urn:esi#/components/schemas/{name}"}, registry=self._registry
        )
        validator.validate(instance)

    def assert_no_extra_keys(self, name: str, instance: Any) -> None:
        """Every object key must be a declared property (ESI sends nothing else)."""
        _no_extra(self.schema(name), instance, self.doc, name)


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _no_extra(schema: dict[str, Any], instance: Any, doc: dict[str, Any], where: str) -> None:
    schema = _resolve(schema, doc)
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = set(instance) - set(props)
        assert not extra, f"{where}: undeclared keys {sorted(extra)}"
        for key, value in instance.items():
            _no_extra(props[key], value, doc, f"{where}.{key}")
    elif isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            _no_extra(schema["items"], item, doc, f"{where}[{index}]")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def list_url(sim: SimServer, character_id: int) -> str:
    return f"{sim.esi_url}/characters/{character_id}/killmails/recent"


def body_url(sim: SimServer, killmail_id: int, killmail_hash: str | None = None) -> str:
    if killmail_hash is None:
        record = sim.world.record(killmail_id)
        assert record is not None
        killmail_hash = record.killmail_hash
    return f"{sim.esi_url}/killmails/{killmail_id}/{killmail_hash}"
