"""Killmail bodies being fetched right now in this process, shared by concurrent syncs.

Bodies are immutable, so two syncs whose characters received the same killmail (a fleet
fight) must not both fetch it: the second waits for the first and reuses its outcome.
A sync claims its whole plan at once and settles it once, so the registry holds one
:class:`Claim` per running sync and one dict entry per claimed id, not an object per
killmail.

Across processes and hosts the same is done by claims in the database
(:mod:`killcli.sync.claims`), taken under this registry: two syncs of one process never
ask the database, they wait here for each other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping


class Claim:
    """The bodies one sync fetches on behalf of all; settled once, when it is done."""

    def __init__(self) -> None:
        self._settled = threading.Event()
        self._failed: dict[int, str] = {}

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the owner has saved its bodies or recorded them as pending."""
        return self._settled.wait(timeout)

    def failure(self, killmail_id: int) -> str | None:
        """Why the owner could not save this body (it is pending), or None."""
        return self._failed.get(killmail_id)

    def settle(self, failed: Mapping[int, str]) -> None:
        self._failed = dict(failed)
        self._settled.set()


class InflightBodies:
    """A registry of body fetches in progress: killmail id -> the claim that fetches it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[int, Claim] = {}

    def claim(
        self, claim: Claim, killmail_ids: Iterable[int]
    ) -> tuple[list[int], dict[int, Claim]]:
        """(ids this claim now owns and must fetch, {id: the other claim fetching it})."""
        mine: list[int] = []
        theirs: dict[int, Claim] = {}
        with self._lock:
            for killmail_id in killmail_ids:
                owner = self._owners.setdefault(killmail_id, claim)
                if owner is claim:
                    mine.append(killmail_id)
                else:
                    theirs[killmail_id] = owner
        return mine, theirs

    def settle(self, claim: Claim, killmail_ids: Iterable[int], failed: Mapping[int, str]) -> None:
        """Forget this claim's ids and wake the syncs waiting on it."""
        with self._lock:
            for killmail_id in killmail_ids:
                if self._owners.get(killmail_id) is claim:
                    del self._owners[killmail_id]
        claim.settle(failed)

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)
