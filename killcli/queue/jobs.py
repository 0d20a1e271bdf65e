"""The job message: one small, versioned JSON document per list to sync.

Wire format, compact JSON with exactly these keys: version 1, a character's list::

    {"v":1,"job_id":"…","character_id":90000001,"requested_at":"2026-01-01T00:00:00+00:00",
     "full":false,"attempt":0}

and version 2, a corporation's list (read with its directors' tokens), the same keys with
``corporation_id`` in place of ``character_id``::

    {"v":2,"job_id":"…","corporation_id":98000001,"requested_at":"…","full":false,"attempt":0}

Character jobs stay version 1, so workers of an older release keep reading them during a
rolling upgrade; they dead-letter version 2 (requeue them once every worker is upgraded:
`killsync dead-letters requeue --all`).

A job carries ids only, never tokens: the worker loads the tokens from the database.
Anything else (bad JSON, a missing, extra or mistyped key, an unknown version, a
non-positive id) is a :class:`PoisonMessage`: retrying it cannot help, so brokers move it
straight to the dead letters. Unknown keys are rejected rather than ignored so that a
message with a stray secret in it never gets processed; a new field means a new version.

Brokers keep one job per list: :attr:`Job.owner_key` names it (a character's id as it
always was, ``corporation:<id>`` for a corporation).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from killcli.db.types import utcnow

JOB_VERSION = 1  # a character's list
CORPORATION_JOB_VERSION = 2  # a corporation's list
MAX_JOB_ID_LENGTH = 64  # the width of jobs.job_id / dead_letters.job_id
MAX_MESSAGE_BYTES = 4096  # a real job is ~150 bytes; anything big is not ours
T = TypeVar("T")
KEYS = ("v", "job_id", "character_id", "requested_at", "full", "attempt")
CORPORATION_KEYS = ("v", "job_id", "corporation_id", "requested_at", "full", "attempt")
OWNER_FIELD = {JOB_VERSION: "character_id", CORPORATION_JOB_VERSION: "corporation_id"}


class PoisonMessage(ValueError):
    """A message that can never be processed; ``str(exc)`` says why."""


def owner_key(*, character_id: int | None = None, corporation_id: int | None = None) -> str:
    """The name brokers keep one job per: ``"90000001"``, ``"corporation:98000001"``."""
    if corporation_id is not None:
        return f"corporation:{corporation_id}"
    return str(character_id)


def parse_owner_key(key: str) -> tuple[int | None, int | None]:
    """``(character_id, corporation_id)`` of an :func:`owner_key`; ``(None, None)`` if it
    is not one."""
    kind, _, number = key.rpartition(":")
    if not number.isdigit() or kind not in ("", "corporation"):
        return None, None
    return (None, int(number)) if kind else (int(number), None)


@dataclass(frozen=True)
class Job:
    """Sync one character's list, or (``corporation_id`` set, ``character_id`` None) one
    corporation's. ``attempt`` counts the tries before this one (0 when fresh)."""

    job_id: str
    character_id: int | None
    requested_at: datetime
    full: bool
    attempt: int
    version: int = JOB_VERSION
    corporation_id: int | None = None

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

    @classmethod
    def for_corporation(
        cls, corporation_id: int, *, full: bool = False, now: Callable[[], datetime] = utcnow
    ) -> Job:
        """A fresh job for a corporation's list."""
        return cls(
            uuid.uuid4().hex,
            None,
            now(),
            full,
            0,
            version=CORPORATION_JOB_VERSION,
            corporation_id=corporation_id,
        )

    @property
    def owner_id(self) -> int:
        """The character's id, or the corporation's."""
        owner = self.character_id if self.corporation_id is None else self.corporation_id
        assert owner is not None, "a job names a character or a corporation"
        return owner

    @property
    def owner_key(self) -> str:
        """Whose list: see :func:`owner_key`."""
        return owner_key(character_id=self.character_id, corporation_id=self.corporation_id)

    @property
    def owner_label(self) -> str:
        """Whose list, for people: ``"character 90000001"``, ``"corporation 98000001"``."""
        if self.corporation_id is not None:
            return f"corporation {self.corporation_id}"
        return f"character {self.character_id}"

    def next_attempt(self) -> Job:
        """The same job, one try later (what a retry publishes)."""
        return replace(self, attempt=self.attempt + 1)

    def to_dict(self) -> dict[str, Any]:
        """The wire document as a dict (the database queue stores it as JSON)."""
        field = OWNER_FIELD[self.version]
        return {
            "v": self.version,
            "job_id": self.job_id,
            field: self.corporation_id if field == "corporation_id" else self.character_id,
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
    if type(version) is not int or version not in OWNER_FIELD:
        raise PoisonMessage(
            f"unknown job version {version!r} (this killsync reads {sorted(OWNER_FIELD)})"
        )
    expected = set(KEYS if version == JOB_VERSION else CORPORATION_KEYS)
    keys = set(data)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise PoisonMessage(f"job keys differ: missing {missing}, unexpected {extra}")
    owner_id = _typed(data, OWNER_FIELD[version], int)
    try:
        return Job(
            job_id=_typed(data, "job_id", str),
            character_id=owner_id if version == JOB_VERSION else None,
            requested_at=_timestamp(_typed(data, "requested_at", str)),
            full=_typed(data, "full", bool),
            attempt=_typed(data, "attempt", int),
            version=version,
            corporation_id=owner_id if version == CORPORATION_JOB_VERSION else None,
        )
    except ValueError as exc:
        raise PoisonMessage(str(exc)) from exc


@dataclass(frozen=True)
class PeekedIds:
    """What a message that may be poison says it is for (each None when it does not)."""

    job_id: str | None = None
    character_id: int | None = None
    corporation_id: int | None = None

    @property
    def owner_key(self) -> str | None:
        """The :func:`owner_key` it names, if it names exactly one positive id."""
        ids = [i for i in (self.character_id, self.corporation_id) if i is not None]
        if len(ids) != 1 or ids[0] <= 0:
            return None
        return owner_key(character_id=self.character_id, corporation_id=self.corporation_id)


def peek_ids(raw: bytes | str) -> PeekedIds:
    """Best-effort ids of a message that may be poison."""
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return PeekedIds()
    if not isinstance(data, dict):
        return PeekedIds()
    job_id = data.get("job_id")

    def number(key: str) -> int | None:
        value = data.get(key)
        return value if type(value) is int else None

    return PeekedIds(
        job_id if isinstance(job_id, str) and len(job_id) <= MAX_JOB_ID_LENGTH else None,
        number("character_id"),
        number("corporation_id"),
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
    field = OWNER_FIELD.get(job.version)
    if field is None:
        return f"unknown job version {job.version!r}"
    if not job.job_id or len(job.job_id) > MAX_JOB_ID_LENGTH or not job.job_id.isprintable():
        return f"job_id must be 1-{MAX_JOB_ID_LENGTH} printable characters"
    if job.attempt < 0:
        return f"attempt must not be negative, got {job.attempt}"
    if job.requested_at.tzinfo is None:
        return "requested_at must carry a timezone"
    return _owner_problem(job, field)


def _owner_problem(job: Job, field: str) -> str | None:
    owner, other = (
        (job.character_id, job.corporation_id)
        if field == "character_id"
        else (job.corporation_id, job.character_id)
    )
    if owner is None or other is not None:
        return f"a version {job.version} job names exactly one list: its {field}"
    if owner <= 0:
        return f"{field} must be positive, got {owner}"
    return None
