"""The one exception tree of killsync and the exit codes it maps to.

::

    KillsyncError                  exit code
    ├── UsageError                 USAGE            bad argument, unknown character
    │   └── ConfigError            USAGE            malformed config file, URL or setting
    ├── InputError                 USAGE            unreadable or malformed input file
    ├── DatabaseError              DATABASE_UNAVAILABLE
    │   └── SchemaOutOfDate        DATABASE_UNAVAILABLE  (run `killsync db upgrade`)
    ├── EsiError                   ESI_UNAVAILABLE
    │   ├── EsiHttpError           ESI_UNAVAILABLE  a non-retryable ESI answer
    │   └── EsiUnavailable         ESI_UNAVAILABLE  downtime, timeouts, error limit
    ├── SsoError                   ESI_UNAVAILABLE  SSO unreachable or answering nonsense
    │   ├── TokenRejected          NEEDS_LOGIN      a JWT that does not validate
    │   ├── TokenUnverified        ESI_UNAVAILABLE  new tokens stored, not verified yet: retry
    │   ├── NeedsLogin             NEEDS_LOGIN      invalid_grant & co: log in again
    │   └── LoginRefused           NEEDS_LOGIN      the person refused at EVE SSO
    ├── NoDirector                 NEEDS_LOGIN      no usable director's token for a corporation
    ├── QueueUnavailable           QUEUE_UNAVAILABLE
    └── PartialFailure             PARTIAL          some work done, some left pending

Library code raises these (wrapping foreign exceptions with ``raise ... from exc``);
only the CLI layer turns them into one line on stderr and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, the contract with cron lines and process managers."""

    OK = 0
    FAILURE = 1  # unexpected internal error (a bug): run again with --debug
    USAGE = 2  # bad arguments, configuration or input (same code Click uses)
    PARTIAL = 3  # the run finished but left work pending (bodies, characters)
    NEEDS_LOGIN = 4  # a character's SSO grant is gone: `killsync login`
    ESI_UNAVAILABLE = 5  # ESI or SSO unreachable, in downtime or error-limited
    DATABASE_UNAVAILABLE = 6  # database unreachable or schema out of date
    QUEUE_UNAVAILABLE = 7  # broker unreachable


class KillsyncError(Exception):
    """Base of every error killsync reports to a user."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


class UsageError(KillsyncError):
    exit_code = ExitCode.USAGE


class CorporationDisabled(UsageError):
    """An operator turned the corporation off (`killsync corporations disable`)."""


class ConfigError(UsageError):
    """A setting that cannot be used; the message names the key."""


class InputError(KillsyncError):
    exit_code = ExitCode.USAGE


class DatabaseError(KillsyncError):
    exit_code = ExitCode.DATABASE_UNAVAILABLE


class SchemaOutOfDate(DatabaseError):
    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"database schema is out of date ({current or 'unversioned'}, this killsync "
            f"needs {head})",
            hint="run `killsync db upgrade`",
        )


class NoDirector(KillsyncError):
    """A corporation has no director whose token may read its killmails (nothing was
    requested with it): a Director must log in with `killsync login --corporation`."""

    exit_code = ExitCode.NEEDS_LOGIN

    def __init__(self, message: str, *, corporation_id: int) -> None:
        super().__init__(message, hint="a Director logs in with `killsync login --corporation`")
        self.corporation_id = corporation_id


class EsiError(KillsyncError):
    exit_code = ExitCode.ESI_UNAVAILABLE


class EsiHttpError(EsiError):
    """ESI answered with a status we do not retry (a 4xx other than 420/429)."""

    def __init__(self, status: int, url: str, detail: str = "") -> None:
        super().__init__(f"ESI answered {status} for {url}" + (f": {detail}" if detail else ""))
        self.status = status
        self.url = url
        self.detail = detail


class EsiUnavailable(EsiError):
    """ESI could not be reached or kept failing after bounded retries."""


class SsoError(KillsyncError):
    exit_code = ExitCode.ESI_UNAVAILABLE


class TokenRejected(SsoError):
    """An access token that fails validation (signature, exp, iss, aud, sub)."""

    exit_code = ExitCode.NEEDS_LOGIN


class TokenUnverified(SsoError):
    """The SSO issued new tokens (the rotated refresh token is stored) but their access
    token could not be verified (key set unreachable, clocks apart): retry later."""

    def __init__(self, message: str, *, character_id: int | None = None) -> None:
        super().__init__(message, hint="the new refresh token is kept; try again later")
        self.character_id = character_id


class NeedsLogin(SsoError):
    """The SSO grant is gone (invalid_grant, invalid_token, invalid_scope)."""

    exit_code = ExitCode.NEEDS_LOGIN

    def __init__(self, message: str, *, reason: str, character_id: int | None = None) -> None:
        super().__init__(message, hint="run `killsync login` for this character")
        self.reason = reason
        self.character_id = character_id


class LoginRefused(SsoError):
    """The person at the browser refused the login (``error=access_denied``)."""

    exit_code = ExitCode.NEEDS_LOGIN


class QueueUnavailable(KillsyncError):
    exit_code = ExitCode.QUEUE_UNAVAILABLE


class PartialFailure(KillsyncError):
    exit_code = ExitCode.PARTIAL
