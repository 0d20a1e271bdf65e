"""Values encrypted at rest: which key opens each, and re-encrypting them under the newest.

Encrypted values are the refresh and access tokens of every character, whatever its status
(active, disabled, needs login), and the webhook URLs (:data:`ENCRYPTED_COLUMNS`). With
``KILLSYNC_SECRET_KEY="NEW,OLD"``, :func:`rotate_secrets` re-encrypts every value that is
not under key #1 yet; once :func:`secrets_status` shows every value under key #1, the
other keys can be dropped.

Rotation walks each column in batches of rows, one transaction a batch. Each value is
written back only if it is still the one that was read (compare and swap), so a token that
a worker refreshed meanwhile is never overwritten with its older self; it is counted as
``changed`` and a second run covers it. An interrupted rotation leaves every value readable
with the same key list, and running it again is safe. A value that no configured key
opens is counted and left as it is, never destroyed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Row, Table, func, select, update
from sqlalchemy.orm import Session

from killcli.config import Settings, secret_keys
from killcli.db import Database
from killcli.db.models import Character, Webhook, table_of
from killcli.sso.crypto import TokenCipher

DEFAULT_BATCH_SIZE = 200
CHARACTERS = table_of(Character)
WEBHOOKS = table_of(Webhook)


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding Fernet ciphertexts, and how a report names its values."""

    kind: str
    label: str
    table: Table
    key: str
    column: str

    @property
    def key_column(self) -> Column[Any]:
        return self.table.c[self.key]

    @property
    def value_column(self) -> Column[Any]:
        return self.table.c[self.column]


ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn(
        "refresh_token", "refresh tokens", CHARACTERS, "character_id", "refresh_token_enc"
    ),
    EncryptedColumn(
        "access_token", "access tokens", CHARACTERS, "character_id", "access_token_enc"
    ),
    EncryptedColumn("webhook_url", "webhook URLs", WEBHOOKS, "id", "url_enc"),
)
LABELS = {column.kind: column.label for column in ENCRYPTED_COLUMNS}


# -- the cipher of a database ----------------------------------------------------------


def count_encrypted(db: Database) -> int:
    """How many encrypted values the database holds (all kinds)."""
    with db.session() as session:
        return sum(
            session.execute(
                select(func.count()).select_from(c.table).where(c.value_column.is_not(None))
            ).scalar_one()
            for c in ENCRYPTED_COLUMNS
        )


def make_cipher(settings: Settings, db: Database) -> TokenCipher:
    """The cipher for ``db``'s secrets: the configured keys, else the key file.

    The key file is generated only for a database without encrypted values: when the file
    is missing but values are there, a new key could never open them, so that is an error
    naming the file. Every command that encrypts or decrypts builds its cipher here.
    """

    def refuse_new() -> str | None:
        count = count_encrypted(db)
        if not count:
            return None
        return f"the database holds {count} encrypted value{'s' if count > 1 else ''}"

    return TokenCipher(secret_keys(settings, refuse_new=refuse_new))


# -- walking the encrypted values ------------------------------------------------------


def _for_each_batch(
    db: Database,
    column: EncryptedColumn,
    batch_size: int,
    handle: Callable[[Session, Sequence[Row[Any, Any]]], None],
) -> None:
    """Call ``handle`` with each batch of (key, ciphertext) rows, one transaction each."""
    after: Any = None
    while True:
        with db.session() as session:
            query = (
                select(column.key_column, column.value_column)
                .where(column.value_column.is_not(None))
                .order_by(column.key_column)
                .limit(batch_size)
            )
            if after is not None:
                query = query.where(column.key_column > after)
            rows: Sequence[Row[Any, Any]] = session.execute(query).all()
            if rows:
                handle(session, rows)
        if len(rows) < batch_size:
            return
        after = rows[-1][0]


# -- status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KindStatus:
    """How many values of one kind each key opens (``by_key[0]`` is key #1)."""

    kind: str
    by_key: tuple[int, ...]
    undecryptable: int

    @property
    def total(self) -> int:
        return sum(self.by_key) + self.undecryptable


@dataclass(frozen=True)
class SecretsStatusResult:
    """Which key each encrypted value is under, per kind. Counts only, never a secret."""

    key_count: int
    kinds: tuple[KindStatus, ...]

    @property
    def total(self) -> int:
        return sum(k.total for k in self.kinds)

    @property
    def on_first_key(self) -> int:
        return sum(k.by_key[0] for k in self.kinds)

    @property
    def undecryptable(self) -> int:
        return sum(k.undecryptable for k in self.kinds)

    @property
    def old_keys_unused(self) -> bool:
        """Every value is under key #1: the other keys can be dropped."""
        return self.on_first_key == self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": self.key_count,
            "total": self.total,
            "on_first_key": self.on_first_key,
            "undecryptable": self.undecryptable,
            "old_keys_unused": self.old_keys_unused,
            "kinds": [
                {
                    "kind": k.kind,
                    "by_key": list(k.by_key),
                    "undecryptable": k.undecryptable,
                    "total": k.total,
                }
                for k in self.kinds
            ],
        }


def _kind_status(
    db: Database, cipher: TokenCipher, column: EncryptedColumn, batch_size: int
) -> KindStatus:
    tally: Counter[int | None] = Counter()

    def count(_session: Session, rows: Sequence[Row[Any, Any]]) -> None:
        tally.update(cipher.key_index(row[1]) for row in rows)

    _for_each_batch(db, column, batch_size, count)
    return KindStatus(column.kind, tuple(tally[i] for i in range(cipher.key_count)), tally[None])


def secrets_status(
    db: Database, cipher: TokenCipher, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> SecretsStatusResult:
    """Count the encrypted values of every kind by the key that opens them."""
    return SecretsStatusResult(
        cipher.key_count,
        tuple(_kind_status(db, cipher, column, batch_size) for column in ENCRYPTED_COLUMNS),
    )


# -- rotation --------------------------------------------------------------------------


@dataclass(frozen=True)
class KindRotation:
    """What a rotation did to the values of one kind."""

    kind: str
    rotated: int  # re-encrypted under key #1
    current: int  # already under key #1
    undecryptable: int  # no configured key opens it: left as it is
    changed: int  # rewritten by another process during the rotation: run it again

    @property
    def total(self) -> int:
        return self.rotated + self.current + self.undecryptable + self.changed


@dataclass(frozen=True)
class RotateResult:
    """The outcome of :func:`rotate_secrets`, per kind."""

    key_count: int
    kinds: tuple[KindRotation, ...]

    def _sum(self, field: str) -> int:
        return sum(getattr(k, field) for k in self.kinds)

    @property
    def rotated(self) -> int:
        return self._sum("rotated")

    @property
    def on_first_key(self) -> int:
        return self._sum("rotated") + self._sum("current")

    @property
    def undecryptable(self) -> int:
        return self._sum("undecryptable")

    @property
    def changed(self) -> int:
        return self._sum("changed")

    @property
    def total(self) -> int:
        return self._sum("total")

    @property
    def old_keys_unused(self) -> bool:
        """Every value is under key #1: the other keys can be dropped."""
        return self.on_first_key == self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": self.key_count,
            "total": self.total,
            "rotated": self.rotated,
            "on_first_key": self.on_first_key,
            "undecryptable": self.undecryptable,
            "changed": self.changed,
            "old_keys_unused": self.old_keys_unused,
            "kinds": [
                {
                    "kind": k.kind,
                    "rotated": k.rotated,
                    "current": k.current,
                    "undecryptable": k.undecryptable,
                    "changed": k.changed,
                    "total": k.total,
                }
                for k in self.kinds
            ],
        }


def _rotate_kind(
    db: Database, cipher: TokenCipher, column: EncryptedColumn, batch_size: int
) -> KindRotation:
    tally: Counter[str] = Counter()

    def rotate(session: Session, rows: Sequence[Row[Any, Any]]) -> None:
        for key, ciphertext in rows:
            index = cipher.key_index(ciphertext)
            if index is None or index == 0:
                tally["undecryptable" if index is None else "current"] += 1
                continue
            swapped = session.execute(
                update(column.table)
                .where(column.key_column == key, column.value_column == ciphertext)
                .values({column.column: cipher.rotate(ciphertext)})
                .returning(column.key_column)
            ).first()
            tally["rotated" if swapped is not None else "changed"] += 1

    _for_each_batch(db, column, batch_size, rotate)
    return KindRotation(
        column.kind, tally["rotated"], tally["current"], tally["undecryptable"], tally["changed"]
    )


def rotate_secrets(
    db: Database, cipher: TokenCipher, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> RotateResult:
    """Re-encrypt every encrypted value that is not under key #1 yet, in one pass."""
    return RotateResult(
        cipher.key_count,
        tuple(_rotate_kind(db, cipher, column, batch_size) for column in ENCRYPTED_COLUMNS),
    )
