"""The job message: one small, versioned JSON document per character to sync.

Wire format (version 1), compact JSON with exactly these keys::

    {"v":1,"job_id":"…","character_id":90000001,"requested_at":"2026-01-01T00:00:00+00:00",
     "full":false,"attempt":0}

A job carries ids only, never tokens: the worker loads the character's token from the
database. Anything else (bad JSON, a missing, extra or mistyped key, an unknown version,
a non-positive id) is a :class:`PoisonMessage`: retrying it cannot help, so brokers move
it straight to the dead letters. Unknown keys are rejected rather than ignored so that a
message with a stray secret in it never gets processed; a new field means a new version.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from killcli.db.types import utcnow

JOB_VERSION = 1
MAX_JOB_ID_LENGTH = 64  # the width of jobs.job_id / dead_letters.job_id
MAX_MESSAGE_BYTES = 4096  # a real job is ~150 bytes; anything big is not ours
T = TypeVar("T")
KEYS = ("v", "job_id", "character_id", "requested_at", "full", "attempt")


class PoisonMessage(ValueError):
    """A message that can never be processed; ``str(exc)`` says why."""


@dataclass(frozen=True)
class Job:
    """Sync one character. ``attempt`` counts the tries before this one (0 when fresh)."""

    job_id: str
    character_id: int
    requested_at: datetime
    full: bool
    attempt: int
    version: int = JOB_VERSION

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(problem)

    @classmethod
    def new(
        cls, character_id: int, *, full: bool = False, now: Callable[[], datetime] = utcnow
    ) -> Job:
        """A fresh job with a random id."""
        return cls(uuid.uuid4().hex, character_id, now(), full, 0)

    def next_attempt(self) -> Job:
        """The same job, one try later (what a retry publishes)."""
        return replace(self, attempt=self.attempt + 1)

    def to_dict(self) -> dict[str, Any]:
        """The wire document as a dict (the database queue stores it as JSON)."""
        return {
            "v": self.version,
            "job_id": self.job_id,
            "character_id": self.character_id,
            "requested_at": self.requested_at.astimezone(UTC).isoformat(),
            "full": self.full,
            "attempt": self.attempt,
        }

    def encode(self) -> bytes:
        """Compact JSON bytes, the message body."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")


def decode(raw: bytes) -> Job:
    """Parse a message body; raise :class:`PoisonMessage` with the reason if malformed."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise PoisonMessage(f"message of {len(raw)} bytes is too large for a job")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoisonMessage(f"not JSON: {exc}") from exc
    return from_dict(data)


def from_dict(data: Any) -> Job:
    """Build a job from a decoded document; raise :class:`PoisonMessage` if malformed."""
    if not isinstance(data, Mapping):
        raise PoisonMessage(f"a job is a JSON object, got {type(data).__name__}")
    version = data.get("v")
    if version != JOB_VERSION:
        raise PoisonMessage(f"unknown job version {version!r} (this killsync reads {JOB_VERSION})")
    keys = set(data)
    if keys != set(KEYS):
        missing, extra = sorted(set(KEYS) - keys), sorted(keys - set(KEYS))
        raise PoisonMessage(f"job keys differ: missing {missing}, unexpected {extra}")
    try:
        return Job(
            job_id=_typed(data, "job_id", str),
            character_id=_typed(data, "character_id", int),
            requested_at=_timestamp(_typed(data, "requested_at", str)),
            full=_typed(data, "full", bool),
            attempt=_typed(data, "attempt", int),
            version=version,
        )
    except ValueError as exc:
        raise PoisonMessage(str(exc)) from exc


def peek_ids(raw: bytes) -> tuple[str | None, int | None]:
    """Best-effort ``(job_id, character_id)`` of a message that may be poison."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    job_id, character_id = data.get("job_id"), data.get("character_id")
    return (
        job_id if isinstance(job_id, str) and len(job_id) <= MAX_JOB_ID_LENGTH else None,
        character_id if type(character_id) is int else None,
    )


def _typed(data: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = data[key]
    # bool is an int in Python; a job must not accept `true` as a character id.
    if type(value) is not kind:
        raise PoisonMessage(f"{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise PoisonMessage(f"requested_at is not an ISO timestamp: {text!r}") from exc


def _problem(job: Job) -> str | None:
    if job.version != JOB_VERSION:
        return f"unknown job version {job.version!r}"
    if not job.job_id or len(job.job_id) > MAX_JOB_ID_LENGTH or not job.job_id.isprintable():
        return f"job_id must be 1-{MAX_JOB_ID_LENGTH} printable characters"
    if job.character_id <= 0:
        return f"character_id must be positive, got {job.character_id}"
    if job.attempt < 0:
        return f"attempt must not be negative, got {job.attempt}"
    if job.requested_at.tzinfo is None:
        return "requested_at must carry a timezone"
    return None
