"""The job store: one SQL table that is the single source of truth about every job.

The API writes new jobs and cancellations, workers write progress and outcomes, and both read.
Because several processes (API, Celery children, embedded job processes) update the same row,
every state change is one conditional ``UPDATE ... WHERE status ...`` whose row count says whether
it won; nothing reads, decides in Python, then writes.  Writes from an attempt are additionally
fenced by the attempt number, so an attempt that was superseded (its worker looked dead and the
job was redelivered) can no longer touch the job.

The store is also what recovery works from (:mod:`worker.recovery`): ``heartbeat_at`` tells a
running job whose worker died, and ``published_at`` (when the job was last sent to the broker)
lets sweepers in several processes agree, by one conditional ``UPDATE``, on which of them sends a
lost job again, and keeps them from sending it more than once per interval.  ``retry_at`` holds a
queued job back after an attempt that could not reach the artifact store: nothing claims it, the
embedded dispatcher does not start it and no sweeper sends it before then (the wait itself is
decided by :meth:`worker.settings.WorkerSettings.storage_retry_wait`).

Every change a client could see bumps the row's ``version`` (a column ``onupdate``, so a new
``UPDATE`` bumps it unless it says otherwise; heartbeats and broker stamps, which no client sees,
keep it).  The API's status path reads only ``(tenant, version)`` per request (:meth:`JobStore.heads`)
and serves its cached body or a 304 while the version stands still.

SQLite (WAL mode, for the single-machine default) and PostgreSQL (by URL) are supported.  Columns
added since a table was created are added to it at startup (``ALTER TABLE ... ADD COLUMN``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Sequence

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# The statuses are the service's public contract, defined once in the engine package (the client
# reads them too); re-exported here for the store's importers.
from prunekit.job_status import ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, STATUSES, SUCCEEDED, TERMINAL

log = logging.getLogger(__name__)

WORKER_LOST = "worker_lost"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the job store")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "prunekit_jobs"

    # ``seq`` orders jobs (newest first) and backs the opaque list cursor; ``id`` is public.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    tenant: Mapped[str] = mapped_column(String(128), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    progress_stage: Mapped[str | None] = mapped_column(String(32))
    progress_percent: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(Text)
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    input: Mapped[dict] = mapped_column(JSON, nullable=False)
    input_size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    spec: Mapped[dict] = mapped_column(JSON, nullable=False)
    result: Mapped[dict | None] = mapped_column(JSON)
    artifacts: Mapped[list | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Float)
    # When a sweeper last (re)sent the job to the broker; NULL: only the API's submission.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Bumped by every UPDATE that changes what a client sees (the ETag of GET /v1/jobs/{id}).
    # Nullable only so that tables of older versions can gain it; NULL reads as 0.
    version: Mapped[int | None] = mapped_column(Integer, default=1, onupdate=text("coalesce(version, 0) + 1"))
    # A queued job is not started before this (backoff after the artifact store was unreachable).
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_prunekit_jobs_tenant_seq", "tenant", "seq"),
        Index("ix_prunekit_jobs_status", "status"),
    )


@dataclass(frozen=True)
class Job:
    """A snapshot of one job row, detached from the database."""

    seq: int
    id: str
    tenant: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    attempts: int
    worker: str | None
    progress_stage: str | None
    progress_percent: float
    progress_message: str | None
    progress_at: datetime | None
    input: dict
    spec: dict
    result: dict | None
    artifacts: list | None
    error_code: str | None
    error_message: str | None
    duration_s: float | None
    version: int | None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


_JOB_FIELDS = [f for f in Job.__dataclass_fields__]
_TABLE = JobRow.__table__
_GET = select(_TABLE).where(_TABLE.c.id == bindparam("id"))
_GET_FOR_TENANT = select(_TABLE).where(_TABLE.c.id == bindparam("id"), _TABLE.c.tenant == bindparam("tenant"))
_HEADS = select(_TABLE.c.id, _TABLE.c.tenant, _TABLE.c.status, func.coalesce(_TABLE.c.version, 0)).where(
    _TABLE.c.id.in_(bindparam("ids", expanding=True)))
# For UPDATEs that change nothing a client sees (heartbeats, broker stamps): keep the version.
_SAME_VERSION = {"version": JobRow.version}


@dataclass(frozen=True)
class Head:
    """Who owns a job, its status, and how often it changed: all the status path reads per request."""

    tenant: str
    status: str
    version: int


@dataclass(frozen=True)
class Claim:
    """Outcome of a worker trying to start a job.

    ``claimed``: run it as ``attempt``.  ``done``: already finished or cancelled, nothing to do
    (a redelivered message).  ``busy``: another live attempt holds it.  ``deferred``: queued, but
    waiting until its ``retry_at`` (a message that came early; a sweep sends it when due).
    ``exhausted``: attempts used up, the job was failed.  ``missing``: no such job (deleted).
    """

    outcome: Literal["claimed", "done", "busy", "deferred", "exhausted", "missing"]
    attempt: int = 0
    job: Job | None = None


@dataclass(frozen=True)
class StaleJob:
    """A running job found silent by :meth:`JobStore.recover_stale`, and what was done with it."""

    job_id: str
    attempt: int
    silent_s: float  # measured: now minus its last heartbeat
    outcome: Literal["requeued", "failed"]
    message: str
    published_at: datetime | None = None  # requeued: the stamp that makes the caller its sender


def silence(seconds: float) -> str:
    """Seconds as a person reads them in a job's message: "74 s", "3.2 s"."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


@dataclass
class DurationStats:
    buckets: list[int] = field(default_factory=list)  # cumulative counts per upper bound
    count: int = 0
    total: float = 0.0


def normalize_database_url(url: str) -> str:
    """Pick an installed PostgreSQL driver for a plain ``postgresql://`` URL.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; deployments commonly install
    ``psycopg2-binary`` instead, so fall back to it rather than failing at connect time.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            try:
                import psycopg2  # noqa: F401

                url = "postgresql+psycopg2://" + url[len("postgresql://"):]
            except ImportError:
                pass
    return url


def _make_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a worker writes; NORMAL sync is durable enough with WAL.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class JobStore:
    """All reads and writes of job records."""

    def __init__(self, url: str, *, create_tables: bool = True) -> None:
        self.url = url
        self.engine = _make_engine(url)
        if create_tables:
            self.create_tables()

    def create_tables(self) -> None:
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError:
            # Another process created the table between our check and our CREATE.
            Base.metadata.create_all(self.engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A table made by an older version lacks newer (nullable) columns: add them."""
        with self.engine.connect() as conn:
            have = {c["name"] for c in inspect(conn).get_columns(_TABLE.name)}
        for column in _TABLE.columns:
            if column.name in have or not column.nullable:
                continue
            ddl = f"ALTER TABLE {_TABLE.name} ADD COLUMN {column.name} {column.type.compile(self.engine.dialect)}"
            try:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
                log.info("job store: added column %s", column.name)
            except SQLAlchemyError:
                # Another process added it first; anything else shows up at the next query.
                with self.engine.connect() as conn:
                    if column.name not in {c["name"] for c in inspect(conn).get_columns(_TABLE.name)}:
                        raise

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- API side -----------------------------------------------------------------------------

    def create(self, *, job_id: str, tenant: str, input: dict, spec: dict) -> Job:
        now = utcnow()
        values = dict(
            id=job_id,
            tenant=tenant,
            status=QUEUED,
            created_at=now,
            attempts=0,
            progress_stage="queued",
            progress_percent=0.0,
            progress_message="waiting for a worker",
            progress_at=now,
            input=input,
            input_size=int(input.get("size", 0)),
            spec=spec,
        )
        with self.engine.begin() as conn:
            conn.execute(JobRow.__table__.insert().values(**values))
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        # The hot path (status polling): statements built once, on the Core table.
        if tenant is None:
            stmt, params = _GET, {"id": job_id}
        else:
            stmt, params = _GET_FOR_TENANT, {"id": job_id, "tenant": tenant}
        with self.engine.connect() as conn:
            row = conn.execute(stmt, params).first()
        return None if row is None else _row_to_job(row)

    def heads(self, job_ids: Sequence[str]) -> dict[str, Head]:
        """Owner and version of each of ``job_ids`` that exists: one indexed query for many."""
        if not job_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(_HEADS, {"ids": list(job_ids)}).all()
        return {job_id: Head(tenant, status, int(version)) for job_id, tenant, status, version in rows}

    def list(
        self, tenant: str, *, status: str | None = None, limit: int = 20, before_seq: int | None = None
    ) -> list[Job]:
        """The tenant's jobs newest first; ``before_seq`` continues after a previous page."""
        stmt = select(JobRow).where(JobRow.tenant == tenant)
        if status is not None:
            stmt = stmt.where(JobRow.status == status)
        if before_seq is not None:
            stmt = stmt.where(JobRow.seq < before_seq)
        stmt = stmt.order_by(JobRow.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_row_to_job(r) for r in conn.execute(stmt).all()]

    def cancel(self, job_id: str) -> bool:
        """Queued or running → cancelled.  False if it had already finished."""
        now = utcnow()
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status.in_(ACTIVE))
            .values(
                status=CANCELLED,
                finished_at=now,
                progress_message="cancelled",
                progress_at=now,
                error_code="cancelled",
                error_message="the job was cancelled by its owner",
            )
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's record (its files are the caller's business)."""
        stmt = delete(JobRow).where(JobRow.id == job_id, JobRow.status.in_(TERMINAL))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def delete_any(self, job_id: str) -> None:
        """Remove a record whatever its state: only for a job whose submission failed."""
        with self.engine.begin() as conn:
            conn.execute(delete(JobRow).where(JobRow.id == job_id))

    # -- worker side --------------------------------------------------------------------------

    def claim(self, job_id: str, *, worker: str, max_attempts: int, stale_after: float) -> Claim:
        """Start an attempt: queued (or running with a dead heartbeat) → running, attempts+1."""
        now = utcnow()
        cutoff = now - timedelta(seconds=stale_after)
        startable = or_(
            and_(JobRow.status == QUEUED, _due(now)),
            and_(JobRow.status == RUNNING, or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < cutoff)),
        )
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.attempts < max_attempts, startable)
            .values(
                status=RUNNING,
                attempts=JobRow.attempts + 1,
                started_at=func.coalesce(JobRow.started_at, now),
                heartbeat_at=now,
                worker=worker[:255],
                progress_stage="starting",
                progress_percent=0.0,
                progress_message="starting",
                progress_at=now,
                retry_at=None,
            )
        )
        with self.engine.begin() as conn:
            won = conn.execute(stmt).rowcount == 1
            row = conn.execute(select(JobRow).where(JobRow.id == job_id)).first()
            retry_at = row.retry_at if row is not None else None
        if row is None:
            return Claim("missing")
        job = _row_to_job(row)
        if won:
            return Claim("claimed", attempt=job.attempts, job=job)
        if job.status in TERMINAL:
            return Claim("done", job=job)
        if job.status == RUNNING and job.heartbeat_at is not None and job.heartbeat_at >= cutoff:
            return Claim("busy", job=job)
        if job.status == QUEUED and retry_at is not None and retry_at > now and job.attempts < max_attempts:
            return Claim("deferred", job=job)
        last = ""
        if job.status == RUNNING and job.heartbeat_at is not None:
            last = f" (the last attempt's worker has been silent for {silence((now - job.heartbeat_at).total_seconds())})"
        self.fail(
            job_id,
            WORKER_LOST,
            f"the worker running this job was lost {job.attempts} time(s){last}; giving up after "
            f"{max_attempts} attempt(s)",
        )
        return Claim("exhausted", job=self.get(job_id))

    def _mine(self, job_id: str, attempt: int) -> Any:
        return and_(JobRow.id == job_id, JobRow.status == RUNNING, JobRow.attempts == attempt)

    def progress(self, job_id: str, attempt: int, stage: str, percent: float, message: str) -> bool:
        """Record progress (and a heartbeat).  False: the job is no longer ours to run."""
        now = utcnow()
        stmt = (
            update(JobRow)
            .where(self._mine(job_id, attempt))
            .values(
                progress_stage=stage[:32],
                progress_percent=float(percent),
                progress_message=message[:1000],
                progress_at=now,
                heartbeat_at=now,
            )
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        stmt = update(JobRow).where(self._mine(job_id, attempt)).values(heartbeat_at=utcnow(), **_SAME_VERSION)
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def succeed(self, job_id: str, attempt: int, *, result: dict, artifacts: list[dict]) -> bool:
        now = utcnow()
        job = self.get(job_id)
        duration = (now - job.started_at).total_seconds() if job and job.started_at else None
        stmt = (
            update(JobRow)
            .where(self._mine(job_id, attempt))
            .values(
                status=SUCCEEDED,
                finished_at=now,
                heartbeat_at=now,
                progress_stage="done",
                progress_percent=100.0,
                progress_message="finished",
                progress_at=now,
                result=result,
                artifacts=artifacts,
                duration_s=duration,
            )
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def fail(self, job_id: str, code: str, message: str, *, attempt: int | None = None) -> bool:
        """Active → failed.  With ``attempt``, only if that attempt still owns the job."""
        now = utcnow()
        cond = self._mine(job_id, attempt) if attempt is not None else and_(
            JobRow.id == job_id, JobRow.status.in_(ACTIVE)
        )
        job = self.get(job_id)
        duration = (now - job.started_at).total_seconds() if job and job.started_at else None
        stmt = (
            update(JobRow)
            .where(cond)
            .values(
                status=FAILED,
                finished_at=now,
                progress_message="failed",
                progress_at=now,
                error_code=code[:64],
                error_message=message[:2000],
                duration_s=duration,
            )
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def requeue(self, job_id: str, attempt: int, *, message: str = "retrying after a lost worker",
                retry_at: datetime | None = None) -> bool:
        """Running → queued after a lost attempt (embedded mode, where there is no broker), or
        given back by an attempt that could not reach the artifact store, to be started again
        no sooner than ``retry_at`` (None: at once)."""
        stmt = (
            update(JobRow)
            .where(self._mine(job_id, attempt))
            .values(status=QUEUED, progress_stage="queued", progress_message=message[:1000], progress_at=utcnow(),
                    retry_at=retry_at)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    # -- recovery (worker.recovery) ----------------------------------------------------------

    def recover_stale(self, *, stale_after: float, max_attempts: int, limit: int = 100) -> list[StaleJob]:
        """Running jobs silent for ``stale_after``: requeued (attempts left) or failed.

        Each change is one ``UPDATE`` fenced by the attempt number and the stale heartbeat, so
        of several sweepers exactly one acts on a job, and an attempt that beats meanwhile keeps
        it.  A requeued job gets ``published_at`` = now: the caller that won sends it again
        (and calls :meth:`unmark_published` if it cannot).  Messages state the measured silence.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=stale_after)
        stmt = (
            select(JobRow.id, JobRow.attempts, JobRow.heartbeat_at)
            .where(JobRow.status == RUNNING, JobRow.heartbeat_at < cutoff)
            .order_by(JobRow.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        out: list[StaleJob] = []
        for job_id, attempt, beat in rows:
            silent = (now - beat).total_seconds()
            cond = and_(self._mine(job_id, attempt), JobRow.heartbeat_at < cutoff)
            if attempt >= max_attempts:
                msg = (f"worker lost: no heartbeat from the worker running attempt {attempt} of "
                       f"{max_attempts} for {silence(silent)}; no attempts left")
                values: dict[str, Any] = dict(
                    status=FAILED, finished_at=now, error_code=WORKER_LOST, error_message=msg,
                    progress_message="failed", progress_at=now,
                )
                outcome: Literal["requeued", "failed"] = "failed"
            else:
                msg = (f"requeued: the worker running attempt {attempt} of {max_attempts} sent no "
                       f"heartbeat for {silence(silent)}")
                values = dict(
                    status=QUEUED, progress_stage="queued", progress_percent=0.0, progress_message=msg,
                    progress_at=now, published_at=now,
                )
                outcome = "requeued"
            with self.engine.begin() as conn:
                if outcome == "failed":
                    started = conn.execute(select(JobRow.started_at).where(JobRow.id == job_id)).scalar()
                    values["duration_s"] = (now - started).total_seconds() if started else None
                if conn.execute(update(JobRow).where(cond).values(**values)).rowcount == 1:
                    out.append(StaleJob(job_id, attempt, silent, outcome, msg,
                                        now if outcome == "requeued" else None))
        return out

    def resend_candidates(self, *, older_than: float, limit: int = 500) -> list[str]:
        """Queued jobs last sent (or submitted) over ``older_than`` seconds ago and due (past any
        ``retry_at``), oldest first."""
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than)
        stmt = (
            select(JobRow.id)
            .where(JobRow.status == QUEUED, func.coalesce(JobRow.published_at, JobRow.created_at) < cutoff,
                   _due(now))
            .order_by(JobRow.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def mark_published(self, job_id: str, *, older_than: float) -> datetime | None:
        """Take the right to send a queued job again: the stamp written, or None if another
        sweeper took it (or it was sent within ``older_than`` seconds, is not due yet, or is no
        longer queued)."""
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than)
        stmt = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status == QUEUED,
                   func.coalesce(JobRow.published_at, JobRow.created_at) < cutoff, _due(now))
            .values(published_at=now, **_SAME_VERSION)
        )
        with self.engine.begin() as conn:
            return now if conn.execute(stmt).rowcount == 1 else None

    def unmark_published(self, job_id: str, stamp: datetime) -> None:
        """Sending failed: let the next sweep try again (unless someone has since)."""
        stmt = update(JobRow).where(JobRow.id == job_id, JobRow.published_at == stamp).values(
            published_at=None, **_SAME_VERSION)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def published_at(self, job_id: str) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(select(JobRow.published_at).where(JobRow.id == job_id)).scalar()

    def status_of(self, job_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(JobRow.status).where(JobRow.id == job_id)).scalar()

    def statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Job id → status, for the ids that have a record."""
        out: dict[str, str] = {}
        ids = list(job_ids)
        for start in range(0, len(ids), 500):
            stmt = select(JobRow.id, JobRow.status).where(JobRow.id.in_(ids[start:start + 500]))
            with self.engine.connect() as conn:
                out.update({i: s for i, s in conn.execute(stmt).all()})
        return out

    def ids_with_status(self, status: str, *, limit: int = 100) -> list[str]:
        """Oldest first: the order jobs should be started in."""
        stmt = select(JobRow.id).where(JobRow.status == status).order_by(JobRow.seq).limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def due_queued(self, *, limit: int = 100) -> list[str]:
        """Queued jobs that may start now (none waiting out a ``retry_at``), oldest first."""
        stmt = (select(JobRow.id).where(JobRow.status == QUEUED, _due(utcnow()))
                .order_by(JobRow.seq).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    # -- housekeeping and metrics -------------------------------------------------------------

    def reap(self, *, stale_after: float, lost_after: float, max_attempts: int) -> list[str]:
        """Fail running jobs whose worker is gone for good.

        A job without a heartbeat for ``stale_after`` whose attempts are used up will never be
        redelivered successfully; one silent for ``lost_after`` has lost its broker message.
        """
        now = utcnow()
        stale = now - timedelta(seconds=stale_after)
        lost = now - timedelta(seconds=lost_after)
        stmt = select(JobRow.id, JobRow.attempts, JobRow.heartbeat_at).where(
            JobRow.status == RUNNING,
            or_(
                and_(JobRow.attempts >= max_attempts, JobRow.heartbeat_at < stale),
                JobRow.heartbeat_at < lost,
            ),
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        reaped = []
        for job_id, attempts, beat in rows:
            silent = (now - beat).total_seconds() if beat is not None else None
            msg = (
                f"worker lost: no heartbeat from the worker running this job for "
                f"{silence(silent) if silent is not None else 'ever'} (attempt {attempts} of {max_attempts})"
            )
            cond = and_(JobRow.id == job_id, JobRow.status == RUNNING, JobRow.attempts == attempts,
                        JobRow.heartbeat_at < stale)
            with self.engine.begin() as conn:
                n = conn.execute(
                    update(JobRow).where(cond).values(
                        status=FAILED, finished_at=now, error_code=WORKER_LOST, error_message=msg,
                        progress_message="failed",
                    )
                ).rowcount
            if n:
                reaped.append(job_id)
        return reaped

    def counts_by_status(self) -> dict[str, int]:
        stmt = select(JobRow.status, func.count()).group_by(JobRow.status)
        with self.engine.connect() as conn:
            counts = {s: 0 for s in STATUSES}
            counts.update({s: int(n) for s, n in conn.execute(stmt).all()})
            return counts

    def duration_stats(self, bounds: Sequence[float]) -> dict[str, DurationStats]:
        """Per final status: cumulative bucket counts, count and sum of run durations."""
        cols = [func.sum(case((JobRow.duration_s <= b, 1), else_=0)) for b in bounds]
        stmt = (
            select(JobRow.status, func.count(), func.coalesce(func.sum(JobRow.duration_s), 0.0), *cols)
            .where(JobRow.duration_s.is_not(None))
            .group_by(JobRow.status)
        )
        out: dict[str, DurationStats] = {}
        with self.engine.connect() as conn:
            for status, count, total, *buckets in conn.execute(stmt).all():
                out[status] = DurationStats([int(b or 0) for b in buckets], int(count), float(total))
        return out


def _due(now: datetime) -> Any:
    """A queued job that may start now: no backoff pending, or its ``retry_at`` has come."""
    return or_(JobRow.retry_at.is_(None), JobRow.retry_at <= now)


def _row_to_job(row: Any) -> Job:
    # Core rows of ``select(JobRow)`` carry one value per column, keyed by column name.
    m = row._mapping
    return Job(**{name: m[name] for name in _JOB_FIELDS})
