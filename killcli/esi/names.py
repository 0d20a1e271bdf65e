"""Resolving IDs to names in batches, isolating the IDs ESI does not know.

``POST /universe/names`` fails as a whole (404) when one ID is unknown (a player structure,
a deleted character). We split the failing batch in halves until the bad IDs stand alone:
about ``2 * log2(batch)`` extra requests per bad ID, each an error-limit point, which the
client's error-limit guard keeps safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from killcli.errors import EsiHttpError
from killcli.esi.models import NameResult

MAX_BATCH = 1000


class NamesApi(Protocol):
    """What :func:`fetch_names` needs of a client (``EsiClient`` has it)."""

    def post_universe_names(self, ids: Iterable[int]) -> list[NameResult]: ...


@dataclass(frozen=True)
class NamesResult:
    """Names found, and the IDs ESI refused to resolve."""

    names: tuple[NameResult, ...]
    unknown_ids: tuple[int, ...]


def fetch_names(
    client: NamesApi, ids: Iterable[int], *, batch_size: int = MAX_BATCH
) -> NamesResult:
    """Resolve any number of IDs, ``batch_size`` (<= 1000) at a time."""
    unique = list(dict.fromkeys(ids))
    size = max(1, min(batch_size, MAX_BATCH))
    names: list[NameResult] = []
    unknown: list[int] = []
    for start in range(0, len(unique), size):
        _resolve(client, unique[start : start + size], names, unknown)
    return NamesResult(tuple(names), tuple(unknown))


def _resolve(client: NamesApi, ids: list[int], names: list[NameResult], unknown: list[int]) -> None:
    try:
        names.extend(client.post_universe_names(ids))
    except EsiHttpError as exc:
        if exc.status != 404:
            raise
        if len(ids) == 1:
            unknown.append(ids[0])
            return
        middle = len(ids) // 2
        _resolve(client, ids[:middle], names, unknown)
        _resolve(client, ids[middle:], names, unknown)
