"""The sync engine: list walk -> plan -> fetch bodies -> batched save -> names -> events."""

from __future__ import annotations

from killcli.sync.engine import SyncEngine, SyncFigures, SyncOptions, SyncResult

__all__ = ["SyncEngine", "SyncFigures", "SyncOptions", "SyncResult"]
