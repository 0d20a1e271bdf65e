"""The reference data the tests read: ``tests/data/`` (see its README.md) and killmail samples.

``tests/data/`` is derived once from CCP's OpenAPI documents by
``scripts/derive_test_data.py`` and committed, so every clone runs the same tests. Killmail
bodies are not in it: the real ones in the shared folder may not be copied into the project.
:func:`killmail_samples` gives the bodies built by ``tests/killmail_shapes.py`` always, and the
real ones as well where the shared folder is beside the repository (more cases, never a skip).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from tests.killmail_shapes import as_text, built_killmails

DATA = Path(__file__).resolve().parent / "data"
#: Real ``GET /killmails/{id}/{hash}`` bodies, in the shared folder beside the repository
#: (absent from most clones). Read in place, never copied (that folder's README).
SHARED_KILLMAILS = Path(__file__).resolve().parents[2] / "shared" / "esi" / "killmails"
#: The 2025-08-26 OpenAPI document, cut to the routes killsync and the simulator use.
OPENAPI_2025 = DATA / "openapi" / "esi-2025-08-26.json"
#: The ``x-rate-limit`` and ``x-cache-age`` extensions of those routes, 2026-08-18 document.
OPENAPI_2026 = DATA / "openapi" / "esi-2026-08-18.json"
#: What to do when a route is missing from the derived documents.
REDERIVE = "add it to OPERATIONS in scripts/derive_test_data.py and re-run the script"


def shared_killmails() -> list[Path]:
    """The real killmail bodies of the shared folder, in name order; none without it."""
    return sorted(SHARED_KILLMAILS.glob("*.json"))


def killmail_sample_sets() -> dict[str, dict[str, str]]:
    """Sample bodies as JSON text by set and name: ``built`` always, ``shared`` if present.

    Call it at import time to parametrize: where the shared folder is absent the tests have
    fewer cases, none skipped.
    """
    sets = {"built": {name: as_text(body) for name, body in built_killmails().items()}}
    if real := shared_killmails():
        sets["shared"] = {path.stem: path.read_text(encoding="utf-8") for path in real}
    return sets


def killmail_samples() -> dict[str, str]:
    """Every sample body as JSON text, by test id ``SET/NAME`` (see :func:`killmail_sample_sets`)."""
    return {
        f"{kind}/{name}": text
        for kind, texts in killmail_sample_sets().items()
        for name, text in texts.items()
    }


@cache
def openapi_2025() -> dict[str, Any]:
    """The 2025-08-26 document (paths and components); shared, do not modify."""
    doc: dict[str, Any] = json.loads(OPENAPI_2025.read_text(encoding="utf-8"))
    return doc


@cache
def openapi_2026() -> dict[str, Any]:
    """The 2026-08-18 extensions: ``paths[path][method]["x-rate-limit"|"x-cache-age"]``."""
    doc: dict[str, Any] = json.loads(OPENAPI_2026.read_text(encoding="utf-8"))
    return doc
