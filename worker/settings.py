"""Configuration shared by the API and the workers (environment variables prefixed ``PRUNEKIT_``).

Both sides must agree on where jobs live (``DATABASE_URL``; ``STORAGE_URL``, or a shared
``DATA_DIR`` without it) and how they are queued (``BROKER_URL``), so those settings are defined here, in the lower layer; the API adds its
own (keys, upload limits) in :mod:`service.settings` by subclassing.  Everything has a default
that works on a laptop: no broker (embedded mode), SQLite under ``./data``.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
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
    storage_retry_delay: float = Field(
        30.0,
        ge=0,
        description="Seconds a job waits before its next attempt after the artifact store was unreachable; "
        "doubled after each such attempt, up to storage_retry_max_delay.",
    )
    storage_retry_max_delay: float = Field(
        600.0, ge=0, description="The longest wait between two attempts of a job after the artifact store was unreachable."
    )
    progress_interval: float = Field(0.5, ge=0, description="Minimum seconds between progress writes.")
    embedded_concurrency: int = Field(1, ge=1, description="Jobs run at once in embedded mode.")
    job_memory_limit: str | None = Field(
        None,
        description="Address space one job process may use (RLIMIT_AS), e.g. 8GiB; 0: no limit. "
        "Default: 80% of the machine's (or cgroup's) memory divided by the jobs run at once.",
    )
    queue_name: str = Field("prunekit", description="Broker queue the jobs are sent to.")
    storage_url: str | None = Field(
        None,
        description="Where uploads and artifacts live. Unset: folders under DATA_DIR (shared by the API "
        "and the workers). s3://bucket/prefix: an S3-compatible object store, the only storage the API "
        "and the workers share (each keeps its scratch space in its own DATA_DIR).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint, e.g. http://seaweedfs:8333 or https://minio.example:9000. Unset: AWS S3."
    )
    s3_region: str = Field("us-east-1", description="Region the requests are signed for.")
    s3_access_key_id: str | None = Field(
        None, description="Access key. Unset: boto3's usual chain (AWS_ACCESS_KEY_ID, ~/.aws, instance role)."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="Secret key for S3_ACCESS_KEY_ID.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="Bucket in the path or in the host name; auto: path with a custom endpoint."
    )
    s3_part_size: int = Field(
        16 << 20, ge=5 << 20, le=5 << 30,
        description="Bytes per multipart-upload part: the most one upload holds in memory.",
    )
    s3_create_bucket: bool = Field(False, description="Create the bucket at start if it does not exist.")
    s3_presign: bool = Field(
        False,
        description="Downloads answer 307 with a presigned URL of the object (after the tenant check) "
        "instead of streaming it through the API. Clients must reach the store.",
    )
    s3_presign_expiry: int = Field(300, ge=1, le=604800, description="Seconds a presigned download URL stays valid.")
    s3_public_endpoint_url: str | None = Field(
        None, description="Endpoint written into presigned URLs, when clients reach the store at another address."
    )

    @field_validator("broker_url", "database_url", "storage_url", "s3_endpoint_url", "s3_access_key_id",
                     "s3_secret_access_key", "s3_public_endpoint_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # docker-compose passes "" for an unset variable: treat it as not configured.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("storage_url")
    @classmethod
    def _a_storage_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_storage_url(value)  # one line naming the problem, at start
            if value.startswith("s3://") and importlib.util.find_spec("boto3") is None:
                raise ValueError("s3:// needs boto3, which comes with the service extra "
                                 "(pip install -e '.[service]' in the checkout)")
        return value

    @field_validator("s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value.strip()):
            raise ValueError("expected an http:// or https:// URL, e.g. http://seaweedfs:8333")
        return value.strip().rstrip("/") if value else value

    @field_validator("s3_secret_access_key")
    @classmethod
    def _keys_in_pairs(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (value is None) != (info.data.get("s3_access_key_id") is None):
            raise ValueError("set both PRUNEKIT_S3_ACCESS_KEY_ID and PRUNEKIT_S3_SECRET_ACCESS_KEY, or neither")
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

    def storage_retry_wait(self, attempt: int) -> float:
        """Seconds before the next attempt of a job whose attempt ``attempt`` (1-based) could not
        reach the artifact store: exponential (``STORAGE_RETRY_DELAY`` × 2^(attempt-1)), capped
        at ``STORAGE_RETRY_MAX_DELAY``.  The one place that decides when such a job runs again;
        the embedded dispatcher and the recovery sweeps only read the time it gives."""
        exponent = min(max(0, int(attempt) - 1), 62)  # 2**62 s is past any cap; no float overflow
        return min(self.storage_retry_max_delay, self.storage_retry_delay * float(2 ** exponent))

    @property
    def storage(self) -> tuple[str, str] | None:
        """``(bucket, prefix)`` of the S3 store, or None for the local folders."""
        return parse_storage_url(self.storage_url) if self.storage_url else None

    @property
    def embedded(self) -> bool:
        return self.broker_url is None


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_storage_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix/")``; ValueError with the reason."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() != "s3":
        raise ValueError("expected s3://bucket or s3://bucket/prefix (unset: folders under DATA_DIR)")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError("the bucket name must be 3-63 lowercase letters, digits, dots or hyphens")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") or not re.match(r"^[A-Za-z0-9._-]+$", p) for p in parts):
        raise ValueError("the prefix may hold only letters, digits, '.', '_', '-' and '/'")
    return bucket, "".join(p + "/" for p in parts)
