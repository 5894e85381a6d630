"""Jobs: long operations run by workers apart from the HTTP layer, surviving restarts.

The job's record (owner, kind, parameters, status, progress, files) lives in the studio's database;
the *dispatch* is `huey <https://huey.readthedocs.io>`_, a small, long-kept task queue whose SQL storage
works on SQLite (one machine: a ``queue.sqlite`` beside the studio's database) and on PostgreSQL (any
number of ``atelier serve worker`` processes on any machines sharing the database; workers take tasks
with ``FOR UPDATE SKIP LOCKED``). Chosen over procrastinate (PostgreSQL only, so no default without a
server) and RQ/Celery (they need Redis or a broker beside the database). Queue messages are JSON, not
huey's default pickle: nothing read from the database is ever unpickled.

A worker *claims* a job with one conditional update (``queued`` -> ``running``), so a task delivered twice
or re-enqueued after a restart runs once. Progress, a heartbeat and previews go to the job's row; a
cancel request is read from it between steps. Jobs a dead worker held (no heartbeat for
``STALE_AFTER`` seconds, or a worker of this machine that no longer runs) are queued again at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import sqlalchemy as sa

from atelier.serve import audit
from atelier.serve.db import Database, Job, JobFile, utcnow
from atelier.serve.operations import File
from atelier.serve.settings import ServeConfig
from atelier.signals import Stopped

log = logging.getLogger("atelier.serve.jobs")

STALE_AFTER = 120.0  # seconds without a heartbeat before a running job counts as abandoned
#: A job whose worker died this many times while running it is failed, not queued again: a job that
#: kills its worker (out of memory, say) must not take the studio down at every restart.
MAX_ATTEMPTS = 3
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
INPUT_PREFIX = "input-"
ADMISSION_LOCK = 0x4154454C  # "ATEL": the advisory lock key that serialises job admission on PostgreSQL


class QueueFull(Exception):
    """The queue, or the caller's share of it, is full (answered 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobError(Exception):
    """A job failed for a reason its owner should read (bad input, an impossible request)."""


def new_job_id() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits


# -- the queue's wire format ---------------------------------------------------------------------------


def _json_default(value):
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    raise TypeError(f"a job message holds a {type(value).__name__}, which is not JSON")


def _json_hook(value: dict):
    if set(value) == {"__datetime__"}:
        return datetime.fromisoformat(value["__datetime__"])
    return value


def make_serializer():
    """A huey serializer writing JSON (huey's own pickles, and a queue table is no place to unpickle)."""
    from huey.registry import Message
    from huey.serializer import Serializer

    class JSONSerializer(Serializer):
        def _serialize(self, data) -> bytes:
            if isinstance(data, Message):
                data = {"__message__": list(data)}
            return json.dumps(data, default=_json_default).encode()

        def _deserialize(self, data: bytes):
            value = json.loads(bytes(data).decode(), object_hook=_json_hook)
            if isinstance(value, dict) and "__message__" in value:
                fields = value["__message__"]
                message = Message(*fields)
                return message._replace(args=tuple(message.args or ()), kwargs=dict(message.kwargs or {}))
            return value

    return JSONSerializer()


def queue_url(db_url: str) -> str:
    """Where huey keeps its tasks: a SQLite file beside a SQLite studio database, else the same PostgreSQL."""
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if not path or path == ":memory:":
            raise ValueError("jobs need a database file, not an in-memory SQLite database")
        return f"sqlite:///{os.path.join(os.path.dirname(os.path.abspath(path)), 'queue.sqlite')}"
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql").render_as_string(hide_password=False)
    raise ValueError(f"jobs need SQLite or PostgreSQL, not {url.get_backend_name()}")


# -- running one job ----------------------------------------------------------------------------------


class JobContext:
    """What a job function sees: its parameters, its inputs, and a way to report and be stopped."""

    def __init__(self, queue: "JobQueue", job: Job) -> None:
        self.queue, self.job_id, self.params = queue, job.id, dict(job.params)
        self.model = job.model
        self.started = time.monotonic()
        self._last_write = 0.0
        self._cancelled = False

    def input(self, name: str) -> bytes:
        with self.queue.db.session() as s:
            row = s.scalar(sa.select(JobFile).where(JobFile.job_id == self.job_id,
                                                    JobFile.name == INPUT_PREFIX + name))
            if row is None:
                raise JobError(f"the job's input {name!r} is missing")
            return row.data

    def progress(self, fraction: float, message: str = "", *, preview: bytes | None = None,
                 force: bool = False) -> None:
        """Record progress (at most ~4 writes a second unless ``force``), and learn of a cancel request."""
        now = time.monotonic()
        if not force and preview is None and now - self._last_write < 0.25:
            return
        self._last_write = now
        values: dict[str, Any] = {"progress": max(0.0, min(1.0, float(fraction))), "heartbeat_at": utcnow()}
        if message:
            values["message"] = message[:500]
        if preview is not None:
            values["preview"] = preview
        with self.queue.db.session() as s:
            s.execute(sa.update(Job).where(Job.id == self.job_id).values(**values))
            self._cancelled = bool(s.scalar(sa.select(Job.cancel_requested).where(Job.id == self.job_id)))

    def should_stop(self) -> bool:
        if time.monotonic() - self._last_write > 1.0:
            self.progress(self._fraction(), force=True)
        return self._cancelled or self.queue.stopping.is_set() or self.timed_out

    def _fraction(self) -> float:
        with self.queue.db.session() as s:
            return float(s.scalar(sa.select(Job.progress).where(Job.id == self.job_id)) or 0.0)

    @property
    def timed_out(self) -> bool:
        return time.monotonic() - self.started > self.queue.settings.job_timeout_s

    def check(self, where: str = "") -> None:
        if self.should_stop():
            raise Stopped(where or "between steps")


#: kind -> function(context, catalog) -> files. Filled by :mod:`atelier.serve.job_kinds` (imported by the app
#: and by ``atelier serve worker``: whoever runs jobs imports the kinds it runs).
JobFunction = Callable[[JobContext, Any], list[File]]
KINDS: dict[str, JobFunction] = {}


def job_kind(name: str) -> Callable[[JobFunction], JobFunction]:
    def register(fn: JobFunction) -> JobFunction:
        if name in KINDS:
            raise ValueError(f"job kind {name!r} is registered twice")
        KINDS[name] = fn
        return fn

    return register


@dataclass
class JobQueue:
    """Submits, runs and cancels jobs; ``start_workers`` runs huey consumers in this process."""

    db: Database
    catalog: Any  # atelier.serve.catalog.Catalog (None: a worker that only learns its models later)
    settings: ServeConfig

    def __post_init__(self) -> None:
        from huey.contrib.sql_huey import SqlHuey

        self.stopping = threading.Event()
        self._admission = threading.Lock()
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.huey = SqlHuey(name="atelier-jobs", database=queue_url(self.db.url), results=False, utc=True,
                            serializer=make_serializer())
        self._task = self.huey.task(name="atelier.run_job")(self.execute)
        self._consumer = None

    # -- submitting --------------------------------------------------------------------------------
    def submit(self, owner_id: int, kind: str, params: dict, *, model: str | None = None,
               inputs: dict[str, tuple[str, bytes]] | None = None) -> str:
        """Record a job and enqueue it; :class:`QueueFull` when the queue or the owner's share is full."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        job_id = new_job_id()
        # admission is check-then-insert: one submission at a time, or two could both pass the check
        # (this process: a lock; several servers on PostgreSQL: a transaction-scoped advisory lock)
        with self._admission, self.db.session() as s:
            if not self.db.is_sqlite:
                s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADMISSION_LOCK})
            mine = s.scalar(sa.select(sa.func.count()).select_from(Job)
                            .where(Job.owner_id == owner_id, Job.status.in_(ACTIVE)))
            if mine >= self.settings.jobs_per_user:
                raise QueueFull(f"you have {mine} jobs queued or running, the most allowed per user "
                                f"({self.settings.jobs_per_user}); wait for one to finish or cancel one", 5)
            queued = s.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.status == "queued"))
            if queued >= self.settings.queue_size:
                raise QueueFull(f"the job queue is full ({queued} jobs waiting); try again shortly", 10)
            s.add(Job(id=job_id, owner_id=owner_id, kind=kind, model=model, params=params, status="queued",
                      message="queued"))
            s.flush()
            for name, (media_type, data) in (inputs or {}).items():
                s.add(JobFile(job_id=job_id, name=INPUT_PREFIX + name, media_type=media_type, data=data))
        audit.record(self.db, "job.submit", actor=str(owner_id), target=job_id, detail={"kind": kind, "model": model})
        self._task(job_id)
        return job_id

    def cancel(self, job_id: str) -> str:
        """Ask a job to stop: a queued one is cancelled at once, a running one at its next step."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            if job.status == "queued":
                job.status, job.finished_at, job.message = "cancelled", utcnow(), "cancelled before it started"
                job.cancel_requested = True
            elif job.status == "running":
                job.cancel_requested = True
                job.message = "cancelling"
            return job.status

    def recover(self) -> int:
        """Queue again the jobs no live worker holds (after a restart); returns how many."""
        now = utcnow()
        host = socket.gethostname()
        again, interrupted = [], {}
        with self.db.session() as s:
            for job in s.scalars(sa.select(Job).where(Job.status.in_(ACTIVE))):
                if job.status == "queued":
                    again.append(job.id)
                    continue
                stale = job.heartbeat_at is None or now - job.heartbeat_at > timedelta(seconds=STALE_AFTER)
                w_host, _, pid = (job.worker or "").rpartition(":")
                dead = w_host == host and pid.isdigit() and not _alive(int(pid))
                if stale or dead or job.worker == self.worker_name:
                    interrupted[job.id] = (job.worker, job.attempts)
                    if (job.attempts or 0) >= MAX_ATTEMPTS:
                        job.status, job.worker, job.finished_at = "failed", None, now
                        job.error = job.message = (f"interrupted {job.attempts} times (its worker died each time); "
                                                   "not run again")
                        continue
                    # it starts again from the beginning: its progress and preview were of the lost run
                    job.status, job.worker, job.progress, job.preview = "queued", None, 0.0, None
                    job.message = "interrupted (its worker died); queued again"
                    again.append(job.id)
        for job_id, (worker, attempts) in interrupted.items():
            given_up = job_id not in again
            audit.record(self.db, "job.failed" if given_up else "job.requeue", actor=self.worker_name, target=job_id,
                         detail={"worker": worker or "", "attempts": attempts or 0,
                                 "reason": "its worker died every time" if given_up else "no live worker held it"})
        for job_id in again:
            self._task(job_id)
        return len(again)

    # -- running ------------------------------------------------------------------------------------
    def execute(self, job_id: str) -> None:
        """Run one job (what a huey worker calls). Never raises: the outcome goes to the job's row."""
        with self.db.session() as s:
            claimed = s.execute(sa.update(Job).where(Job.id == job_id, Job.status == "queued",
                                                     Job.cancel_requested.is_(False))
                                .values(status="running", worker=self.worker_name, started_at=utcnow(),
                                        heartbeat_at=utcnow(), message="started",
                                        attempts=Job.attempts + 1)).rowcount
            job = s.get(Job, job_id) if claimed else None
        if job is None:
            return
        ctx = JobContext(self, job)
        status, error, message = "succeeded", None, "done"
        try:
            files = KINDS[job.kind](ctx, self.catalog)
            with self.db.session() as s:
                for f in files:
                    s.add(JobFile(job_id=job_id, name=f.name, media_type=f.media_type, data=f.data))
        except Stopped:
            if self.stopping.is_set() and not ctx._cancelled:
                status, message = "queued", "interrupted by a shutdown; queued again"
            elif ctx.timed_out and not ctx._cancelled:
                status, error = "failed", f"stopped after the time limit of {self.settings.job_timeout_s:g} s"
                message = error
            else:
                status, message = "cancelled", "cancelled"
        except (JobError, ValueError, KeyError, FileNotFoundError) as exc:
            status, error, message = "failed", str(exc)[:2000], "failed"
        except Exception as exc:  # a bug: logged in full here, a plain message to the owner
            log.exception("job %s (%s) failed", job_id, job.kind)
            status, error, message = "failed", f"internal error ({type(exc).__name__})", "failed"
        with self.db.session() as s:
            values = dict(status=status, error=error, message=message, heartbeat_at=utcnow())
            if status == "queued":
                values.update(worker=None, progress=0.0)
            else:
                values.update(finished_at=utcnow())
                if status == "succeeded":
                    values["progress"] = 1.0
            s.execute(sa.update(Job).where(Job.id == job_id).values(**values))
        audit.record(self.db, f"job.{status}", actor=self.worker_name, target=job_id, detail={"kind": job.kind})

    def start_workers(self, n: int) -> None:
        """Run ``n`` worker threads in this process (no signal handlers taken: the server owns those)."""
        if n < 1 or self._consumer is not None:
            return
        self.stopping.clear()
        consumer = self.huey.create_consumer(workers=n, worker_type="thread", initial_delay=0.05, backoff=1.3,
                                             max_delay=0.5, periodic=False, check_worker_health=False)
        consumer._set_signal_handlers = lambda: None  # type: ignore[method-assign]
        consumer.start()
        self._consumer = consumer

    def stop_workers(self, timeout: float = 10.0) -> None:
        """Stop the workers; running jobs stop at their next step and are queued again."""
        if self._consumer is None:
            return
        self.stopping.set()
        self._consumer.shutdown_timeout = timeout
        self._consumer.stop(graceful=True)
        self._consumer = None

    def run_forever(self, n: int) -> None:
        """A stand-alone worker (``atelier serve worker``): until SIGINT/SIGTERM."""
        import signal

        self.recover()
        self.start_workers(n)
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        while not done.wait(1.0):
            pass
        self.stop_workers()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
