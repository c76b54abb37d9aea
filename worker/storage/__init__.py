"""The artifact store (uploads, calibration and inputs files, artifacts): interface and backends.

:func:`open_store` picks the backend from the settings: ``STORAGE_URL=s3://bucket/prefix`` → an
S3-compatible object store (:mod:`.s3`); unset → folders under ``DATA_DIR`` (:mod:`.local`).
See :mod:`.base` for the keys and the guarantees both give.
"""

from __future__ import annotations

from ..layout import Layout
from ..settings import WorkerSettings
from .base import (
    ARTIFACTS,
    UPLOADS,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    StorageUnavailable,
    UploadSink,
    artifact_key,
    artifact_prefix,
    attempt_prefix,
    legacy_artifact_key,
    upload_key,
)

__all__ = [
    "ARTIFACTS", "UPLOADS", "ObjectInfo", "ObjectMissing", "ObjectStore", "StorageUnavailable", "UploadSink",
    "artifact_key", "artifact_prefix", "attempt_prefix", "legacy_artifact_key", "open_store", "upload_key",
]


def open_store(settings: WorkerSettings, layout: Layout | None = None) -> ObjectStore:
    """The store the settings name (a new client: one per process, never shared across a fork)."""
    storage = settings.storage
    if storage is None:
        from .local import LocalStore

        return LocalStore(layout or Layout(settings.data_dir))
    from .s3 import S3Config, S3Store

    bucket, prefix = storage
    secret = settings.s3_secret_access_key
    return S3Store(S3Config(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        addressing_style=settings.s3_addressing_style,
        part_size=settings.s3_part_size,
        create_bucket=settings.s3_create_bucket,
        presign=settings.s3_presign,
        presign_expiry=settings.s3_presign_expiry,
        public_endpoint_url=settings.s3_public_endpoint_url,
    ))
