"""The studio's database: principals and their tokens, web sessions, jobs and their results, ratings.

SQLAlchemy 2 ORM over SQLite (the default, a file under ``$ATELIER_HOME/serve/``) or PostgreSQL
(``postgresql://...``, needed when workers on other machines share the queue). The schema is owned by
Alembic: :func:`migrate` brings any database to the newest revision (``atelier/serve/migrations``),
and a test checks that the migrations and these classes agree.

Nothing secret is stored in the clear: tokens and session ids are kept as SHA-256 digests of 256-bit
random secrets (a slow password hash buys nothing for secrets that long), compared in constant time.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

__all__ = ["AuditRow", "StudioSecret", "DatabaseError", "Base", "Principal", "Token", "WebSession", "Job", "JobFile", "RatingTask", "RatingRow",
           "utcnow", "make_engine", "migrate", "Database", "normalise_url"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """Timestamps stored as UTC and read back timezone-aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use atelier.serve.db.utcnow()")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class JSONText(sa.types.TypeDecorator):
    """JSON stored as text: the same on SQLite and PostgreSQL, and never NaN."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value, allow_nan=False, sort_keys=True)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    pass


class Principal(Base):
    """A user or a service account: what tokens belong to and what owns jobs, tasks and ratings."""

    __tablename__ = "principals"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Token(Base):
    """An API token: ``atl_<key_id>_<secret>``; only the secret's SHA-256 is kept."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    principal_id: Mapped[int] = mapped_column(sa.ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    scopes: Mapped[list] = mapped_column(JSONText)
    models: Mapped[list | None] = mapped_column(JSONText, nullable=True)  # None: every model
    label: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebSession(Base):
    """A browser session opened with a token: the cookie holds a random id, the table its digest."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(sa.ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    csrf_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Job(Base):
    """A long operation: queued, running, then succeeded, failed or cancelled; progress in [0, 1]."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # 192 random bits, URL-safe
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    params: Mapped[dict] = mapped_column(JSONText)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(sa.Float, default=0.0)
    message: Mapped[str] = mapped_column(sa.Text, default="")
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    preview: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)  # a small PNG while running
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")  # times a worker took it up


class JobFile(Base):
    """A file a job produced (kept in the database, so workers on other machines can hand it back)."""

    __tablename__ = "job_files"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    media_type: Mapped[str] = mapped_column(sa.String(100))
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    __table_args__ = (sa.UniqueConstraint("job_id", "name", name="uq_job_files_job_name"),)


class RatingTask(Base):
    """A question put to one rater: a pair of images (``pair``) or one image (``real``: real or not?).

    Items are ``model:seed`` (a sample drawn again on demand, reproducibly) or ``real:index`` (a test
    image of the model's dataset); the rater sees neither, only the images."""

    __tablename__ = "rating_tasks"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # pair | real
    question: Mapped[str] = mapped_column(sa.String(64))
    left_model: Mapped[str] = mapped_column(sa.String(200))
    left_item: Mapped[str] = mapped_column(sa.String(200))
    right_model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    right_item: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    answered: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RatingRow(Base):
    """One answer, the :class:`atelier.metrics.ratings.Rating` record in a table (the JSON-lines
    store's records import into it and export from it) plus what the studio adds: the ``kind``, the
    four-way pairwise ``answer`` (left, right, both_good, both_bad) or the real/generated verdict, and
    ``pair_key`` (the unordered pair), unique per rater: at most one vote per rater per pair."""

    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(primary_key=True)
    rater_id: Mapped[int | None] = mapped_column(sa.ForeignKey("principals.id", ondelete="SET NULL"),
                                                 nullable=True, index=True)
    rater: Mapped[str] = mapped_column(sa.String(200))  # the Rating's rater_id (a principal's name or imported)
    kind: Mapped[str] = mapped_column(sa.String(16))  # pair | real | score
    question: Mapped[str] = mapped_column(sa.String(64))
    item_id: Mapped[str] = mapped_column(sa.String(200))
    model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    other_id: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    other_model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    answer: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    score: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    pair_key: Mapped[str | None] = mapped_column(sa.String(420), nullable=True)
    meta: Mapped[dict] = mapped_column(JSONText, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (sa.UniqueConstraint("rater", "kind", "question", "pair_key", name="uq_ratings_one_vote"),)


class DatabaseError(ValueError):
    """The database cannot be opened or brought up to date (said with its address, never its password)."""


class AuditRow(Base):
    """One event of the audit trail. ``row_hash`` = SHA-256 over the previous row's hash and this row's
    fields, so an edited, inserted or deleted row breaks the chain (:func:`atelier.serve.audit.verify`).
    Addresses and free text are kept only as salted hashes."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(64))  # a principal's name, or "-" (anonymous), or "cli"
    action: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str] = mapped_column(sa.String(200), default="")
    detail: Mapped[dict] = mapped_column(JSONText, default=dict)
    address: Mapped[str] = mapped_column(sa.String(64), default="")  # salted hash of the client address
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    row_hash: Mapped[str] = mapped_column(sa.String(64))


class StudioSecret(Base):
    """Per-database secrets (the salt of the audit trail's hashes), made on first use."""

    __tablename__ = "studio_secrets"
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(128))


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg2 (the driver the job queue shares); a path means a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the job workers' writes
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` with Alembic (creating it on first use)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


class Database:
    """An engine, migrated, and a session factory: ``with db.session() as s: ...`` commits on success."""

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = normalise_url(url)
        try:
            self.engine = make_engine(self.url)
            if migrate_schema:
                migrate(self.engine)
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # a bad URL, no server, not a database file
            shown = self.url if "://" not in url else url.split("@")[-1]
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseError(f"cannot open the studio's database {shown} ({type(reason).__name__}: "
                                f"{str(reason).splitlines()[0] if str(reason) else 'no detail'})") from None
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def session(self):
        return self._factory.begin()

    def dispose(self) -> None:
        self.engine.dispose()

    def describe(self) -> str:
        """The URL without its password, for messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)
