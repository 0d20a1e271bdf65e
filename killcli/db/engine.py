"""Engine and session factory, schema checks and migrations.

SQLite is tuned for a tool that several processes use at once: WAL journal, a busy
timeout, foreign keys on, and ``BEGIN IMMEDIATE`` transactions so that two writers
queue on the lock instead of failing half-way with "database is locked".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from killcli.errors import ConfigError, DatabaseError, SchemaOutOfDate
from killcli.files import create_private_file, make_private_dir

SQLITE_BUSY_TIMEOUT_MS = 60_000
SQLITE_CACHED_STATEMENTS = 16
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The newest migration (tests/test_migrations.py checks it is alembic's head): a database
# stamped with it needs no look at the migrations, and alembic is not even loaded.
SCHEMA_HEAD = "0013"
SQLITE_HEADER = b"SQLite format 3\x00"
NO_DATABASE_HINT = "run `killsync db upgrade` to create it, or check KILLSYNC_DATABASE_URL"


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_on_begin)
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for other databases, ``:memory:`` and ``file:`` URIs."""
    parsed = make_url(url) if isinstance(url, str) else url
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or parsed.query.get("uri"):
        return None  # SQLite resolves URI filenames itself (mode=ro, shared caches)
    return Path(database).expanduser()


def prepare_sqlite_file(path: Path, *, create: bool) -> None:
    """Check ``path`` is a SQLite database, or create it private (0600 in a 0700 directory).

    Without ``create`` a missing file is an error: a mistyped path must not leave an empty
    database and new directories behind. An existing file keeps its mode.
    """
    if path.is_dir():
        raise DatabaseError(f"{path} is a directory, not a SQLite database file")
    if path.exists():
        _check_sqlite_header(path)
        return
    if not create:
        raise DatabaseError(f"no database at {path}", hint=NO_DATABASE_HINT)
    try:
        make_private_dir(path.parent)
        create_private_file(path)
    except OSError as exc:
        raise DatabaseError(f"cannot create the database {path}: {exc.strerror or exc}") from exc


def _check_sqlite_header(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise DatabaseError(f"cannot read the database {path}: {exc.strerror or exc}") from exc
    if header and header != SQLITE_HEADER:  # an empty file is an empty database
        raise DatabaseError(
            f"{path} is not a SQLite database",
            hint="point KILLSYNC_DATABASE_URL at a killsync database",
        )


# Connections per process: a worker's syncs (32 by default) and body threads (16) each may
# hold one briefly; the overflow is opened only when they all do, and closed after.
POOL_SIZE = 10
POOL_OVERFLOW = 50


def make_engine(url: str) -> Engine:
    """An engine for a SQLite or PostgreSQL URL (``postgresql://`` means psycopg 3).

    The SQLite file must exist (see :func:`prepare_sqlite_file`), or SQLite creates it
    with the umask's mode.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        # IN lists and multi-row INSERTs of every length are distinct SQL texts: with the
        # driver's default of 128 prepared statements per pooled connection they kept tens
        # of MiB alive (peak RSS 133 -> 111 MiB over 20,000 killmails with 16).
        engine = create_engine(
            parsed,
            connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "cached_statements": SQLITE_CACHED_STATEMENTS,
            },
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    try:
        return create_engine(
            parsed, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
        )
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"KILLSYNC_DATABASE_URL: the driver for {parsed.drivername} is not installed",
            hint="pip install 'killsync[postgres]'",
        ) from exc


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands against this killsync's migrations."""

    current: str | None  # None: an empty database
    head: str
    known: bool  # False: a newer killsync migrated it

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def as_dict(self) -> dict[str, Any]:
        """The ``db.status`` JSON payload."""
        return {
            "current": self.current,
            "head": self.head,
            "up_to_date": self.up_to_date,
            "newer_than_killsync": not self.known,
        }


class Database:
    """One engine and session factory per process, built once and passed around."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open ``url``; ``create=False`` refuses a SQLite file that does not exist yet."""
        self.url = url
        path = sqlite_file(url)
        if path is not None:
            prepare_sqlite_file(path, create=create)
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        try:
            with self.sessions.begin() as session:
                yield session
        except sa_exc.DatabaseError as exc:
            if not _unusable(exc):
                raise
            raise DatabaseError(f"database error: {_short(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # -- schema -----------------------------------------------------------------

    def _stamped_revision(self) -> str | None:
        """The revision stamped in ``alembic_version``, read with one query; None if there
        is none to read (what alembic then makes of it, :meth:`current_revision` says)."""
        try:
            with self._connect() as conn:
                rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except (sa_exc.DBAPIError, DatabaseError):  # no such table, or no database at all
            return None
        return str(rows[0][0]) if len(rows) == 1 else None

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

        with self._connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory  # noqa: PLC0415

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        assert head is not None
        return head

    def schema_status(self) -> SchemaStatus:
        current = self.current_revision()
        return SchemaStatus(current, self.head_revision(), self.is_known_revision(current))

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate to the newest schema; idempotent. Returns (before, after)."""
        from alembic import command  # noqa: PLC0415

        before = self.current_revision()
        self._check_known(before)
        with self._connect() as conn:
            cfg = self._alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        return before, self.head_revision()

    def ensure_schema(self, *, create: bool = True) -> None:
        """Check the schema is current; with ``create``, create it on an empty SQLite file."""
        if self._stamped_revision() == SCHEMA_HEAD:
            return  # the common case, without loading alembic (a worker's start-up)
        current, head = self.current_revision(), self.head_revision()
        if current == head:
            return
        self._check_known(current)
        if create and current is None and self.dialect == "sqlite" and not self._has_tables():
            self.upgrade()
            return
        raise SchemaOutOfDate(current, head)

    def is_known_revision(self, revision: str | None) -> bool:
        """Whether this killsync's migrations know ``revision`` (None: an empty database)."""
        from alembic.script import ScriptDirectory  # noqa: PLC0415
        from alembic.util import CommandError  # noqa: PLC0415

        if revision is None:
            return True
        try:
            found = ScriptDirectory.from_config(self._alembic_config()).get_revision(revision)
        except CommandError:
            return False
        return found is not None

    def _check_known(self, revision: str | None) -> None:
        if not self.is_known_revision(revision):
            raise DatabaseError(
                f"database schema {revision} is newer than this killsync (it knows up to "
                f"{self.head_revision()})",
                hint="upgrade killsync; `db upgrade` cannot go back",
            )

    def _has_tables(self) -> bool:
        with self._connect() as conn:
            return bool(inspect(conn).get_table_names())

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa_exc.DatabaseError as exc:
            if not _unusable(exc):
                raise
            raise DatabaseError(f"cannot use the database: {_short(exc)}") from exc

    def _alembic_config(self) -> Any:
        from alembic.config import Config  # noqa: PLC0415

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg


def _unusable(exc: sa_exc.DatabaseError) -> bool:
    """The database cannot be used at all: unreachable, locked, corrupt, not a database.

    Plain ``DatabaseError`` is what sqlite3 raises for "file is not a database" and
    "database disk image is malformed"; its subclasses (integrity, data, programming
    errors) are about one statement and propagate as they are.
    """
    return isinstance(exc, OperationalError) or type(exc) is sa_exc.DatabaseError


def _short(exc: SQLAlchemyError) -> str:
    """The driver's first line, without SQL or bound parameters."""
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
