"""tests/data is whole, and scripts/derive_test_data.py cuts documents as it says.

The comparison with the shared folder itself is ``derive_test_data.py --check`` (a test
would have to skip where the folder is absent); these run everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from scripts.derive_test_data import (
    OPERATIONS,
    SourceError,
    differences,
    existing,
    extensions_document,
    subset_document,
    write,
)
from tests.refdata import DATA, openapi_2025, openapi_2026


def _refs(node: Any) -> list[str]:
    if isinstance(node, list):
        return [ref for child in node for ref in _refs(child)]
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for child in node.values() for ref in _refs(child)]
    return []


def test_every_ref_of_the_2025_cut_resolves_inside_it() -> None:
    doc = openapi_2025()
    refs = _refs(doc)
    assert refs
    for ref in refs:
        match = re.fullmatch(r"#/components/(\w+)/(\w+)", ref)
        assert match, ref
        kind, name = match.groups()
        assert name in doc["components"][kind], ref


def test_both_documents_hold_exactly_the_operations_in_use() -> None:
    for doc in (openapi_2025(), openapi_2026()):
        held = {
            (method, path)
            for path, item in doc["paths"].items()
            for method in item
            if method in {"get", "post", "put", "delete", "patch"}
        }
        assert held == set(OPERATIONS)


def test_sources_name_every_derived_file() -> None:
    sources = json.loads((DATA / "sources.json").read_text(encoding="utf-8"))
    files = {
        p.relative_to(DATA).as_posix()
        for p in DATA.rglob("*")
        if p.is_file() and p.name not in {"README.md", "sources.json"}
    }
    assert set(sources) == files
    for entry in sources.values():
        assert re.fullmatch(r"[0-9a-f]{64}", entry["source_sha256"])


def test_no_real_killmail_is_copied_into_the_project(tmp_path: Path) -> None:
    """The shared folder's README forbids copies: none is derived, and a re-run removes old ones."""
    sources = json.loads((DATA / "sources.json").read_text(encoding="utf-8"))
    assert not [entry for entry in sources.values() if "killmails" in entry["source"]]
    assert not (DATA / "killmails").exists()
    old = tmp_path / "killmails" / "killmail_1.json"
    old.parent.mkdir()
    old.write_text("{}")
    assert differences({"sources.json": b"{}"}, existing(tmp_path)) == [
        "missing: sources.json",
        "stray:   killmails/killmail_1.json",
    ]
    write(tmp_path, {"sources.json": b"{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sources.json"]


TINY_DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"version": "1"},
    "paths": {
        "/a": {
            "parameters": [{"$ref": "#/components/parameters/P"}],
            "get": {
                "responses": {"200": {"$ref": "#/components/responses/R"}},
                "security": [{"OAuth2": ["scope"]}],
            },
            "delete": {"responses": {"200": {"$ref": "#/components/schemas/Unused"}}},
        },
        "/b": {"get": {"responses": {}}},
    },
    "components": {
        "parameters": {"P": {"schema": {"type": "string"}}},
        "responses": {"R": {"content": {"schema": {"$ref": "#/components/schemas/Outer"}}}},
        "schemas": {
            "Outer": {"items": {"$ref": "#/components/schemas/Inner"}},
            "Inner": {"type": "integer"},
            "Unused": {"type": "null"},
        },
        "securitySchemes": {"OAuth2": {"type": "oauth2"}, "Other": {"type": "http"}},
    },
}


def test_the_cut_follows_refs_transitively_and_keeps_nothing_else() -> None:
    cut = subset_document(TINY_DOC, (("get", "/a"),))
    assert set(cut["paths"]) == {"/a"}
    assert set(cut["paths"]["/a"]) == {"parameters", "get"}
    assert {kind: sorted(names) for kind, names in cut["components"].items()} == {
        "parameters": ["P"],
        "responses": ["R"],
        "schemas": ["Inner", "Outer"],
        "securitySchemes": ["OAuth2"],
    }
    with pytest.raises(SourceError, match="POST /a is not in the 2025 document"):
        subset_document(TINY_DOC, (("post", "/a"),))


TINY_YAML = """\
openapi: 3.0.3
info:
  title: ESI
  version: 2026-08-18
paths:
  /a/{id}:
    get:
      description: |-
        x-rate-limit: not a key, block text
      x-cache-age: 300
      x-rate-limit:
        group: char-killmail
        max-tokens: 30
        window-size: 15m
      x-server-cache-ttl: 9
  /b:
    post:
      operationId: "PostB"
components:
  schemas: {}
"""


def test_the_yaml_reader_takes_the_extensions_of_each_operation() -> None:
    found = extensions_document(TINY_YAML, (("get", "/a/{id}"), ("post", "/b")))
    assert found == {
        "info": {"title": "ESI", "version": "2026-08-18"},
        "openapi": "3.0.3",
        "paths": {
            "/a/{id}": {
                "get": {
                    "x-cache-age": 300,
                    "x-rate-limit": {
                        "group": "char-killmail",
                        "max-tokens": 30,
                        "window-size": "15m",
                    },
                }
            },
            "/b": {"post": {}},
        },
    }
    with pytest.raises(SourceError, match="GET /b is not in the 2026 document"):
        extensions_document(TINY_YAML, (("get", "/b"),))
