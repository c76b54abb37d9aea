"""API settings: the shared worker settings plus what only the HTTP side needs.

Read from environment variables prefixed ``PRUNEKIT_`` (see docs/service.md for the table).
"""

from __future__ import annotations

import hashlib
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
    upload_idle_seconds: float = Field(60.0, gt=0, description="Longest wait for the next bytes of an upload "
                                       "before it is answered 408 (a client trickling bytes holds a connection "
                                       "and an open upload in the store).")
    upload_max_seconds: float = Field(3600.0, gt=0, description="Longest time one upload may take in all "
                                      "(2 GiB at 1 MB/s takes 36 minutes).")
    events_interval: float = Field(0.5, gt=0, le=60, description="Seconds between an event stream's looks "
                                   "at its job (one batched store read per tick for all streams).")
    events_heartbeat: float = Field(15.0, gt=0, description="Seconds of silence before an event stream "
                                    "sends a keep-alive comment (proxies close idle connections).")
    events_max_seconds: float = Field(600.0, gt=0, description="Longest life of one event stream; the client "
                                      "reconnects with Last-Event-ID to go on.")
    events_max_streams: int = Field(1000, ge=1, description="Event streams one API process serves at once.")

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, raw: str) -> str:
        _parse_keys(raw)  # fail at startup, not at the first request
        return raw

    @cached_property
    def tenants_by_key(self) -> dict[str, str]:
        return _parse_keys(self.api_keys)

    @cached_property
    def tenants_by_digest(self) -> dict[bytes, str]:
        """SHA-256 of each key → tenant: a presented key is looked up by its digest, in constant
        time whatever the number of keys, and nothing about a key leaks through the timing."""
        return {key_digest(key): tenant for key, tenant in self.tenants_by_key.items()}


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.strip().encode()).digest()


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
