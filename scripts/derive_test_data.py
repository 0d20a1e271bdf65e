"""Derive the reference data the tests read (``tests/data/``) from the shared ESI folder.

The tests must run in any clone, so they never need ``../shared`` (CCP's multi-MB OpenAPI
documents and real killmail bodies beside the repository). This script copies out, once,
exactly what they need of the OpenAPI documents:

* ``openapi/esi-2025-08-26.json``: the 2025-08-26 OpenAPI document cut down to the operations
  in ``OPERATIONS`` and the components they reference (transitively, so every ``$ref`` still
  resolves inside the file);
* ``openapi/esi-2026-08-18.json``: CCP's ``x-rate-limit`` and ``x-cache-age`` extensions of
  the same operations, read from the 2026-08-18 YAML document (the only facts the tests take
  from it);
* ``sources.json``: which source file (and its SHA-256) each output came from.

It does not copy the real killmail bodies of ``esi/killmails/``: that folder's README says
not to copy them into the project, whose fixtures are its own. The tests build their sample
bodies instead (``tests/killmail_shapes.py``, one per feature that README lists) and add the
real ones as extra cases only where the shared folder is present. A re-run deletes copies
an older version of this script wrote to ``killmails/``, and ``--check`` reports them.

Output is deterministic (sorted keys, fixed indentation), so a re-run without a new source
gives no diff. Re-run it when the client or the simulator starts using a new ESI route (add
it to ``OPERATIONS``) or when the shared folder gets a newer document; ``--check`` (exit
status 1 on a difference) tells whether ``tests/data/`` is up to date:

    .venv/bin/python scripts/derive_test_data.py [--shared ../shared] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_OUT = REPO / "tests" / "data"
OPENAPI_2025 = "esi-openapi-2025-08-26.json"
OPENAPI_2026 = "esi-openapi-2026-08-18.yaml"
#: The files (relative to the output folder) this script owns: --check reports strays, a
#: re-run deletes them. ``killmails/`` held copies of the real bodies (never derived now).
OWNED = ("sources.json", "openapi/*.json", "killmails/*.json")

#: Every (method, path) that killsync's client (``killcli/esi/client.py``) or the simulator
#: (``ROUTES`` of the simulator's ``esi`` module) sends or serves. The tests that read the
#: derived documents fail on a route missing here.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("post", "/characters/affiliation"),
    ("get", "/characters/{character_id}"),
    ("get", "/characters/{character_id}/killmails/recent"),
    ("get", "/characters/{character_id}/roles"),
    ("get", "/corporations/{corporation_id}"),
    ("get", "/corporations/{corporation_id}/killmails/recent"),
    ("get", "/alliances/{alliance_id}"),
    ("get", "/killmails/{killmail_id}/{killmail_hash}"),
    ("get", "/status"),
    ("post", "/universe/names"),
    ("get", "/universe/systems/{system_id}"),
    ("get", "/universe/types/{type_id}"),
    ("get", "/universe/groups/{group_id}"),
    ("get", "/universe/categories/{category_id}"),
    ("get", "/universe/constellations/{constellation_id}"),
    ("get", "/markets/{region_id}/history"),
    ("get", "/markets/prices"),
)
#: The operation extensions taken from the 2026 document.
EXTENSIONS = ("x-cache-age", "x-rate-limit")
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


class SourceError(Exception):
    """The shared folder does not hold what the derivation needs."""


# -- the 2025 JSON document: a subset that keeps its $refs resolvable ---------------------


def subset_document(
    doc: dict[str, Any], operations: tuple[tuple[str, str], ...] = OPERATIONS
) -> dict[str, Any]:
    """``doc`` with only ``operations`` and the components they reference."""
    paths: dict[str, Any] = {}
    for method, path in operations:
        item = doc["paths"].get(path, {})
        if method not in item:
            raise SourceError(f"{method.upper()} {path} is not in the 2025 document")
        kept = paths.setdefault(path, {k: v for k, v in item.items() if k not in HTTP_METHODS})
        kept[method] = item[method]
    components: dict[str, dict[str, Any]] = {}
    pending = [paths]
    while pending:
        for kind, name in sorted(_references(pending.pop())):
            if name not in components.setdefault(kind, {}):
                components[kind][name] = doc["components"][kind][name]
                pending.append(components[kind][name])
    return {
        "components": components,
        "info": doc["info"],
        "openapi": doc["openapi"],
        "paths": paths,
    }


def _references(node: Any) -> Iterator[tuple[str, str]]:
    """The ``(kind, name)`` of every component ``node`` points at: ``$ref`` and security."""
    if isinstance(node, list):
        for child in node:
            yield from _references(child)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            match = re.fullmatch(r"#/components/([^/]+)/([^/]+)", ref)
            if match is None:
                raise SourceError(f"unsupported $ref {ref!r} (only #/components/KIND/NAME)")
            yield match.group(1), match.group(2)
        if "responses" in node:  # an operation: its security names schemes, not $refs
            for requirement in node.get("security", []):
                yield from (("securitySchemes", scheme) for scheme in requirement)
        for child in node.values():
            yield from _references(child)


# -- the 2026 YAML document: the rate-limit and cache extensions --------------------------


def extensions_document(
    text: str, operations: tuple[tuple[str, str], ...] = OPERATIONS
) -> dict[str, Any]:
    """The ``EXTENSIONS`` of ``operations``, read from openapi-generator's YAML layout.

    That layout is regular: paths at two spaces under ``paths:``, methods at four,
    operation keys at six and the members of a mapping value at eight. A block scalar's
    text is always indented deeper than its key, so it cannot pass for an operation key.
    """
    found = _operation_extensions(text)
    paths: dict[str, dict[str, Any]] = {}
    for method, path in operations:
        if (path, method) not in found:
            raise SourceError(f"{method.upper()} {path} is not in the 2026 document")
        paths.setdefault(path, {})[method] = found[path, method]
    return {"info": _info(text), "openapi": _top_scalar(text, "openapi"), "paths": paths}


def _operation_extensions(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    key: tuple[str, str] | None = None
    path = ""
    mapping: dict[str, Any] | None = None
    for line in _section(text, "paths"):
        if match := re.fullmatch(r"  (/\S*):", line):
            path, key = match.group(1), None
        elif match := re.fullmatch(r"    ([a-z]+):", line):
            key = (path, match.group(1)) if match.group(1) in HTTP_METHODS else None
            if key:
                found[key] = {}
        elif key and (match := re.fullmatch(r"      ([\w-]+):(?: (.*))?", line)):
            mapping = None
            if match.group(1) in EXTENSIONS:
                value = _scalar(match.group(2)) if match.group(2) else {}
                found[key][match.group(1)] = value
                mapping = value if isinstance(value, dict) else None
        elif mapping is not None and (match := re.fullmatch(r"        ([\w-]+): (.+)", line)):
            mapping[match.group(1)] = _scalar(match.group(2))
        elif not line.startswith("        "):
            mapping = None
    return found


def _section(text: str, name: str) -> list[str]:
    """The lines of the top-level mapping ``name`` (without its own line)."""
    lines = text.splitlines()
    start = lines.index(f"{name}:") + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"\S", lines[i])), len(lines))
    return lines[start:end]


def _info(text: str) -> dict[str, Any]:
    info = {}
    for line in _section(text, "info"):
        if match := re.fullmatch(r"  (title|version): (.+)", line):
            info[match.group(1)] = _scalar(match.group(2))
    return info


def _top_scalar(text: str, name: str) -> Any:
    match = re.search(rf"^{name}: (.+)$", text, re.MULTILINE)
    if match is None:
        raise SourceError(f"no top-level {name!r} in the 2026 document")
    return _scalar(match.group(1))


def _scalar(raw: str) -> Any:
    raw = raw.strip()
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


# -- putting it together ------------------------------------------------------------------


def derive(shared: Path) -> dict[str, bytes]:
    """Every output file (path relative to ``tests/data``) and its content."""
    esi = shared / "esi"
    sources = {name: esi / name for name in (OPENAPI_2025, OPENAPI_2026)}
    for path in sources.values():
        if not path.is_file():
            raise SourceError(f"{path} is missing")
    doc_2025 = json.loads(sources[OPENAPI_2025].read_bytes())
    doc_2026 = extensions_document(sources[OPENAPI_2026].read_text(encoding="utf-8"))
    out = {
        "openapi/esi-2025-08-26.json": _json(subset_document(doc_2025)),
        "openapi/esi-2026-08-18.json": _json(doc_2026),
    }
    origin = {
        "openapi/esi-2025-08-26.json": sources[OPENAPI_2025],
        "openapi/esi-2026-08-18.json": sources[OPENAPI_2026],
    }
    manifest = {
        name: {
            "source": source.relative_to(shared).as_posix(),
            "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        }
        for name, source in origin.items()
    }
    out["sources.json"] = _json(manifest)
    return out


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def existing(out_dir: Path) -> dict[str, bytes]:
    """The files of ``out_dir`` this script owns, as they are now."""
    return {
        path.relative_to(out_dir).as_posix(): path.read_bytes()
        for pattern in OWNED
        for path in sorted(out_dir.glob(pattern))
    }


def differences(wanted: dict[str, bytes], found: dict[str, bytes]) -> list[str]:
    changed = [
        f"changed: {name}" for name in wanted if name in found and found[name] != wanted[name]
    ]
    missing = [f"missing: {name}" for name in wanted if name not in found]
    stray = [f"stray:   {name}" for name in found if name not in wanted]
    return sorted(changed + missing + stray)


def write(out_dir: Path, wanted: dict[str, bytes]) -> None:
    for name in existing(out_dir):
        if name not in wanted:
            (out_dir / name).unlink()
            if not any((out_dir / name).parent.iterdir()):
                (out_dir / name).parent.rmdir()
    for name, content in wanted.items():
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != content:
            target.write_bytes(content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the tests read")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a diff")
    args = parser.parse_args(argv)
    try:
        wanted = derive(args.shared)
    except (SourceError, OSError, ValueError) as exc:
        print(f"derive_test_data: {exc}", file=sys.stderr)
        return 2
    diff = differences(wanted, existing(args.out))
    if args.check:
        for line in diff:
            print(line, file=sys.stderr)
        print("tests/data is " + ("out of date" if diff else "up to date"), file=sys.stderr)
        return 1 if diff else 0
    write(args.out, wanted)
    size = sum(len(content) for content in wanted.values())
    print(f"wrote {len(wanted)} files ({size:,} bytes), {len(diff)} changed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
