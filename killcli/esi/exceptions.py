"""Errors of the ESI layer beyond those in :mod:`killcli.errors` (both are ``EsiError``)."""

from __future__ import annotations

from killcli.errors import EsiError


class MalformedResponse(EsiError):
    """ESI answered 2xx with well-formed JSON of the wrong shape (not retried)."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"ESI sent an unexpected body for {url}: {detail}")
        self.url = url
        self.detail = detail


class ListRefreshed(EsiError):
    """A paged list changed while it was being walked (``Last-Modified`` or ``X-Pages``).

    Rows may have shifted between pages, so the walk must start again from page 1.
    """

    def __init__(self, url: str, page: int) -> None:
        super().__init__(
            f"the list at {url} was refreshed while reading page {page}",
            hint="it changes every few minutes; try again",
        )
        self.url = url
        self.page = page
