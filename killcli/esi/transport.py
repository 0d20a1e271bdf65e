"""Outgoing connections bound to one local address (``KILLSYNC_SOURCE_ADDRESS``).

A multi-homed host picks the address its ESI and SSO traffic leaves from, like curl's
``--interface``: ESI keys its per-IP budgets (the ``killmail`` bucket, the error limit) by
the address it sees, so the choice decides which budget a worker spends. An egress is meant
to be a real host's own address; spreading one host's requests over extra addresses to
multiply the budget may breach CCP's terms of use.
"""

from __future__ import annotations

import functools
import itertools
import math
import ssl
import threading

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of the process: building one loads the CA bundle
    (tens of milliseconds of a worker's start, three times over)."""
    return httpx.create_ssl_context()


def bound_transport(
    local_address: str | None, limits: httpx.Limits | None = None
) -> httpx.HTTPTransport | None:
    """A transport whose connections leave from ``local_address``; ``None`` when unset.

    ``None`` lets ``httpx.Client`` build its default transport. A client given a transport
    ignores its own ``limits``, so the pool limits travel with the transport.
    """
    if local_address is None:
        return None
    return httpx.HTTPTransport(
        local_address=local_address, limits=limits or httpx.Limits(), verify=tls_context()
    )


class ShardedTransport(httpx.BaseTransport):
    """``shards`` connection pools, each thread keeping to one of them (dealt in turn).

    httpcore's pool walks every connection and every waiting request on each request and
    each response closed, under one lock: with 32 threads on one pool, that walk and the
    waits on its lock were the largest cost of a re-sync (8 pools cut a re-sync worker's
    CPU by about a third, ``bench/bench_resync.py``). Small pools make it short; the
    connections a client may open stay about ``limits.max_connections`` in all.
    """

    def __init__(
        self,
        *,
        shards: int,
        limits: httpx.Limits,
        local_address: str | None = None,
    ) -> None:
        total = limits.max_connections or 100
        each = max(1, math.ceil(total / shards))
        shard_limits = httpx.Limits(max_connections=each, max_keepalive_connections=each)
        self._pools = [
            httpx.HTTPTransport(
                local_address=local_address, limits=shard_limits, verify=tls_context()
            )
            for _ in range(shards)
        ]
        self._deal = itertools.count()
        self._mine = threading.local()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pool: httpx.HTTPTransport | None = getattr(self._mine, "pool", None)
        if pool is None:
            pool = self._mine.pool = self._pools[next(self._deal) % len(self._pools)]
        return pool.handle_request(request)

    def close(self) -> None:
        for pool in self._pools:
            pool.close()
