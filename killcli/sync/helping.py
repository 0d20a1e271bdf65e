"""Fetch the bodies other workers' syncs want, with budget this egress has to spare.

A sync whose plan is longer than one block of its body threads publishes the rest as
wants (:meth:`killcli.sync.claims.ClaimSet.want`) and claims them a block at a time as it
gets to them. When its egress's killmail bucket is spent, the rest waits for the next
window, while a worker that leaves through another egress may have finished its own
round with most of its bucket left. A worker runs a :class:`BodyHelper` beside its
consumer: while the process's body threads serve no sync and its killmail bucket has
tokens to spare, it claims a block of wants of syncs on **other** egresses (on the same
egress the budget is one: helping would gain nothing), fetches them on the engine's body
threads, saves them and links them to the lists that wanted them. The wanting sync waits
for those as for any body claimed elsewhere, and links them when they land.

A body the helper cannot fetch is given back (its want and our claim dropped): the sync
that wanted it fetches it itself, and records it pending if it fails again. A helper that
dies holds its claims until they lapse (:data:`killcli.sync.claims.CLAIM_TTL_S`), after
which the waiting sync takes them over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from killcli.errors import EsiError, KillsyncError
from killcli.esi.models import KillmailRef
from killcli.killmail import KillmailError, KillmailRows
from killcli.sync.claims import ClaimSet, Want
from killcli.sync.engine import SyncEngine
from killcli.sync.fetcher import FetcherClosed
from killcli.sync.owners import CharacterOwner, CorporationOwner, ListOwner

logger = logging.getLogger(__name__)
HELP_POLL_S = 0.5  # how often an idle worker looks for bodies wanted elsewhere
BODY_TOKENS = 2  # what a body (a 200) costs its bucket
PROBE_BODIES = 4  # bodies a process fetches to learn its bucket before it helps more
FORGET_EVERY_S = 60.0  # how often an idle helper deletes the wants of syncs that died
KILLMAIL_ROUTE = "/killmails/{id}/{hash}"  # the route template the limiter keys buckets by
LINGER_S = 10.0  # how long a draining worker waits for wants of other egresses' syncs


class BodyHelper:
    """One per worker process: fetch other egresses' wanted bodies while idle."""

    def __init__(self, engine: SyncEngine, *, poll_s: float = HELP_POLL_S) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self.helped = 0  # bodies saved for other workers' syncs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def spare_bodies(self) -> int:
        """How many bodies this process may fetch now without waiting for its bucket."""
        limiter = self.engine.esi.limiter
        available = None if limiter is None else limiter.available_tokens(KILLMAIL_ROUTE)
        if available is None:  # no body fetched yet: a few, to learn the bucket
            return PROBE_BODIES
        return min(self.engine.fetcher.threads, available // BODY_TOKENS)

    def help_once(self) -> int:
        """Claim, fetch and save bodies wanted elsewhere while the bucket has room and
        this process's own syncs leave the body threads idle; how many were saved (0:
        none wanted, or no room)."""
        claims = self.engine.claims.open()
        try:
            return self._fetch(claims)
        finally:
            claims.close()

    def drain(
        self,
        stop: threading.Event,
        others_syncing: Callable[[], bool] = lambda: False,
        linger_s: float = LINGER_S,
    ) -> None:
        """Help until syncs of other egresses want no more bodies (a draining worker's
        end): waits while what they want is claimed, or our bucket is spent, meanwhile.
        While ``others_syncing`` (workers of other egresses run syncs: those may want
        bodies soon, as they come to their body phase), waits for wants up to ``linger_s``
        after the last body it fetched for them."""
        quiet_since = time.monotonic()
        while not stop.is_set():
            if self._help_safely() > 0:
                quiet_since = time.monotonic()
                continue
            try:
                if not self.engine.claims.wanted_by_other_egresses() and not (
                    time.monotonic() - quiet_since < linger_s and others_syncing()
                ):
                    return
            except KillsyncError as exc:
                logger.warning("could not look for bodies other workers want: %s", exc)
                return
            stop.wait(self.poll_s)

    def start(self) -> None:
        """Help in a thread of its own whenever the body threads are idle."""
        self._thread = threading.Thread(target=self._run, name="killsync-helper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the block in hand (its bodies are saved or given back)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        forget_at = time.monotonic() + FORGET_EVERY_S
        while not self._stop.is_set():
            idle = len(self.engine.fetcher) == 0
            if idle and self._help_safely() > 0:
                continue
            if idle and time.monotonic() >= forget_at:
                forget_at = time.monotonic() + FORGET_EVERY_S
                try:
                    self.engine.claims.forget_lapsed_wants()
                except KillsyncError as exc:
                    logger.warning("could not delete lapsed body wants: %s", exc)
            self._stop.wait(self.poll_s)

    def _help_safely(self) -> int:
        try:
            return self.help_once()
        except FetcherClosed:  # the process is stopping
            return 0
        except KillsyncError as exc:  # the database blinked: the wanting syncs go on alone
            logger.warning("could not help other workers with their bodies: %s", exc)
            return 0

    def _fetch(self, claims: ClaimSet) -> int:
        wants: dict[int, Want] = {}

        def claim_more(unstarted: int) -> list[KillmailRef]:
            room = self.spare_bodies() - unstarted
            found = self.engine.claims.wanted_elsewhere(room) if room > 0 else []
            taken = claims.take_wanted(want.killmail_id for want in found)
            mine = [want for want in found if want.killmail_id in taken]
            wants.update((want.killmail_id, want) for want in mine)
            return [want.ref for want in mine]

        first = claim_more(0)
        if not first:
            return 0
        saved = 0
        batch: list[tuple[Want, KillmailRows]] = []
        with self.engine.fetcher.stream(first) as bodies:
            for fetched in bodies:
                want = wants[fetched.key.killmail_id]
                try:
                    batch.append((want, fetched.result()))
                except (EsiError, KillmailError) as exc:
                    logger.info("body %d for another worker failed: %s", want.killmail_id, exc)
                    claims.give_back([want.killmail_id])
                if len(batch) >= self.engine.fetcher.threads:
                    saved += self._save(claims, batch)
                    batch = []
                # Only while no sync of ours has bodies to fetch (the oldest stream is
                # served first: ours would wait behind these).
                if bodies.unstarted < self.engine.fetcher.threads and len(self.engine.fetcher) == 1:
                    bodies.extend(claim_more(bodies.unstarted))
        saved += self._save(claims, batch)
        self.helped += saved
        return saved

    def _save(self, claims: ClaimSet, batch: list[tuple[Want, KillmailRows]]) -> int:
        """Save fetched bodies, each for the list that wanted it."""
        lists: defaultdict[tuple[int | None, int | None], list[KillmailRows]] = defaultdict(list)
        for want, rows in batch:
            lists[want.character_id, want.corporation_id].append(rows)
        for (character_id, corporation_id), rows_of_list in lists.items():
            self.engine.save_bodies(_list_of(character_id, corporation_id), claims, rows_of_list)
        return len(batch)


def _list_of(character_id: int | None, corporation_id: int | None) -> ListOwner:
    """The list a want came from, enough to link its bodies and name it in events."""
    if character_id is not None:
        return CharacterOwner(character_id, "", None, None)
    assert corporation_id is not None, "a want names a character or a corporation"
    return CorporationOwner(corporation_id, "", None, None)
