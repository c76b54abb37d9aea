"""Configuration shared by the API and the workers (environment variables prefixed ``PRUNEKIT_``).

Both sides must agree on where jobs live (``DATA_DIR``, ``DATABASE_URL``) and how they are
queued (``BROKER_URL``), so those settings are defined here, in the lower layer; the API adds its
own (keys, upload limits) in :mod:`service.settings` by subclassing.  Everything has a default
that works on a laptop: no broker (embedded mode), SQLite under ``./data``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """Settings every process touching jobs needs."""

    model_config = SettingsConfigDict(env_prefix="PRUNEKIT_", extra="ignore")

    broker_url: str | None = Field(
        None,
        description="Celery broker (e.g. redis://redis:6379/0). Unset: embedded mode, jobs run "
        "in worker processes started by the API itself.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the job store. Default: sqlite file DATA_DIR/prunekit.db."
    )
    data_dir: Path = Field(Path("./data"), description="Uploads, artifacts and scratch space.")
    job_time_limit: int = Field(
        3600, ge=1, description="Seconds a job may run before it is stopped and failed (soft limit)."
    )
    job_time_limit_grace: int = Field(
        30, ge=1, description="Seconds after the soft limit before the job's process is killed."
    )
    job_max_attempts: int = Field(
        3, ge=1, description="Deliveries of one job (worker crashes included) before it is failed."
    )
    visibility_timeout: int | None = Field(
        None,
        ge=1,
        description="Seconds before the broker redelivers an unacknowledged job to another worker. "
        "Default: job time limit + grace + 60, so a live job is never delivered twice.",
    )
    restore_interval: int | None = Field(
        None, ge=1, description="Seconds between the worker's sweeps for unacknowledged jobs to redeliver."
    )
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between a running job's heartbeats.")
    stale_after: float = Field(
        60.0,
        gt=0,
        description="A running job without a heartbeat for this long is considered lost: it is requeued "
        "and sent again (or failed once its attempts are used up).",
    )
    lost_after: float | None = Field(
        None,
        gt=0,
        description="Seconds without heartbeat after which a running job is failed even with attempts "
        "left (a backstop for when nothing requeues it). Default: stale_after + visibility timeout + "
        "two restore sweeps.",
    )
    recovery_interval: float = Field(
        15.0,
        gt=0,
        description="Seconds between each Celery worker's recovery sweeps (the first runs when the worker "
        "starts): running jobs silent for stale_after are requeued, queued jobs the broker lost are sent "
        "again.  The API does the same at every reaper sweep.",
    )
    resend_after: float = Field(
        60.0,
        gt=0,
        description="A queued job the broker does not hold is sent again once this long has passed since "
        "it was submitted or last sent; also the least time between two sends of one job.",
    )
    incoming_max_age: float = Field(
        3600.0,
        gt=0,
        description="A partial upload untouched this long (its API process died mid-upload) is deleted "
        "by the API's reaper.",
    )
    progress_interval: float = Field(0.5, ge=0, description="Minimum seconds between progress writes.")
    embedded_concurrency: int = Field(1, ge=1, description="Jobs run at once in embedded mode.")
    job_memory_limit: str | None = Field(
        None,
        description="Address space one job process may use (RLIMIT_AS), e.g. 8GiB; 0: no limit. "
        "Default: 80% of the machine's (or cgroup's) memory divided by the jobs run at once.",
    )
    queue_name: str = Field("prunekit", description="Broker queue the jobs are sent to.")

    @field_validator("broker_url", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # docker-compose passes "" for an unset variable: treat it as not configured.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("job_memory_limit")
    @classmethod
    def _a_size(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            from prunekit.limits import parse_size

            parse_size(value, name="PRUNEKIT_JOB_MEMORY_LIMIT")
            return value.strip()
        return None

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'prunekit.db').resolve()}"

    @property
    def resolved_visibility_timeout(self) -> int:
        if self.visibility_timeout is not None:
            return self.visibility_timeout
        return self.job_time_limit + self.job_time_limit_grace + 60

    @property
    def resolved_restore_interval(self) -> int:
        if self.restore_interval is not None:
            return self.restore_interval
        return max(1, min(60, self.resolved_visibility_timeout // 2))

    @property
    def resolved_lost_after(self) -> float:
        """Seconds without heartbeat after which a job is failed even with attempts left.

        Long enough for the broker to redeliver it (visibility timeout plus restore sweeps), so
        the reaper only steps in when the message itself is gone.
        """
        if self.lost_after is not None:
            return self.lost_after
        return self.stale_after + self.resolved_visibility_timeout + 2 * self.resolved_restore_interval

    @property
    def embedded(self) -> bool:
        return self.broker_url is None
