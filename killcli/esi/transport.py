"""Outgoing connections bound to one local address (``KILLSYNC_SOURCE_ADDRESS``).

A multi-homed host picks the address its ESI and SSO traffic leaves from, like curl's
``--interface``: ESI keys its per-IP budgets (the ``killmail`` bucket, the error limit) by
the address it sees, so the choice decides which budget a worker spends. An egress is meant
to be a real host's own address; spreading one host's requests over extra addresses to
multiply the budget may breach CCP's terms of use.
"""

from __future__ import annotations

import functools
import ssl

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
