"""API settings: the shared worker settings plus what only the HTTP side needs.

Read from environment variables prefixed ``PRUNEKIT_`` (see docs/service.md for the table).
"""

from __future__ import annotations

from functools import cached_property

from pydantic import Field, field_validator

from worker.settings import WorkerSettings

GiB = 1 << 30


class Settings(WorkerSettings):
    api_keys: str = Field(
        "",
        description='Comma-separated "key=tenant" pairs. Empty: only loopback clients are served, '
        "all as tenant 'local'.",
    )
    max_upload_bytes: int = Field(2 * GiB, ge=1, description="Largest accepted model (or inputs) upload.")
    max_spec_bytes: int = Field(1 << 20, ge=1, description="Largest accepted spec text.")
    reaper_interval: float = Field(15.0, gt=0, description="Seconds between sweeps for lost jobs.")
    upload_chunk_bytes: int = Field(1 << 20, ge=4096, description="Bytes buffered before each disk write.")

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, raw: str) -> str:
        _parse_keys(raw)  # fail at startup, not at the first request
        return raw

    @cached_property
    def tenants_by_key(self) -> dict[str, str]:
        return _parse_keys(self.api_keys)


def _parse_keys(raw: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, tenant = item.partition("=")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key or not tenant:
            raise ValueError('entries must look like "key=tenant", comma-separated')
        if len(key) < 8:
            raise ValueError("keys must be at least 8 characters")  # never echo the key itself
        keys[key] = tenant
    return keys


def get_settings() -> Settings:
    return Settings()
