"""The S3 backend: objects in a bucket of any S3-compatible store (AWS S3, SeaweedFS, MinIO, Ceph).

With it, the API and the workers share no folder: the API streams each upload into the bucket as
a multipart upload (one part of ``S3_PART_SIZE`` in memory at a time, never the whole file, never
a temporary file), reads back only what validation needs (the head, a zip directory) with ranged
GETs, and streams downloads out of the bucket (or hands the client a short-lived presigned URL
when ``S3_PRESIGN`` is on).  A worker downloads a job's inputs into its own scratch folder, runs
the engine on local files, and uploads the artifacts under keys that name its attempt.

boto3 is imported here only (a ``service`` extra dependency); the engine package never sees it.
Requests are signed with SigV4; checksums are sent only where the S3 API requires them, which
keeps S3-compatible servers that predate AWS's newer default checksums working.  Every failure to
reach the store (refused connection, timeout, 5xx, bad credentials, missing bucket) becomes one
:class:`StorageUnavailable` line; a missing key is :class:`ObjectMissing`.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .base import ObjectInfo, ObjectMissing, ObjectStore, StorageUnavailable, UploadSink, check_key

MIN_PART = 5 << 20  # S3's smallest part (except the last)
MAX_PARTS = 10_000


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str  # "" or "some/prefix/" (with the trailing slash)
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    addressing_style: str = "auto"
    part_size: int = 16 << 20
    create_bucket: bool = False
    presign: bool = False
    presign_expiry: int = 300
    public_endpoint_url: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Translate botocore's exceptions into ours (one line, no traceback for callers)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", ""))
        if code in _MISSING_CODES:
            raise ObjectMissing(what) from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise StorageUnavailable(f"{what}: the object store answered {status} {code}: "
                                 f"{err.get('Message') or ''}".strip()) from None
    except BotoCoreError as exc:  # connection refused, timeouts, no credentials, ...
        raise StorageUnavailable(f"{what}: {_one_line(exc)}") from None


def _client(cfg: S3Config, endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    style = cfg.addressing_style
    if style == "auto":
        style = "path" if endpoint_url else "auto"  # custom endpoints rarely resolve bucket subdomains
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": style},
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=32,
    )
    session = boto3.session.Session(
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        region_name=cfg.region,
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


class _MultipartSink(UploadSink):
    """Parts of ``part_size`` are sent as they fill; a small object is one PUT at commit."""

    def __init__(self, store: "S3Store", key: str) -> None:
        self.store, self.key = store, key
        self.part_size = store.cfg.part_size
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def _send_part(self, data: bytes) -> None:
        s = self.store
        with _errors(f"uploading {self.key}"):
            if self.upload_id is None:
                self.upload_id = s.client.create_multipart_upload(Bucket=s.bucket, Key=self.key)["UploadId"]
            n = len(self.parts) + 1
            if n > MAX_PARTS:
                raise StorageUnavailable(f"uploading {self.key}: more than {MAX_PARTS} parts; raise S3_PART_SIZE")
            r = s.client.upload_part(Bucket=s.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=n, Body=data)
            self.parts.append({"PartNumber": n, "ETag": r["ETag"]})

    def write(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= self.part_size:
            part = bytes(self.buf[: self.part_size])
            del self.buf[: self.part_size]
            self._send_part(part)

    def commit(self) -> None:
        s = self.store
        if self.upload_id is None:
            with _errors(f"uploading {self.key}"):
                s.client.put_object(Bucket=s.bucket, Key=self.key, Body=bytes(self.buf))
            self.buf.clear()
            return
        if self.buf:
            self._send_part(bytes(self.buf))
            self.buf.clear()
        with _errors(f"uploading {self.key}"):
            s.client.complete_multipart_upload(
                Bucket=s.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
            )

    def abort(self) -> None:
        self.buf.clear()
        if self.upload_id is not None:
            try:
                self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # the reaper aborts it later (S3 lists unfinished uploads)
                pass


class _RangeReader(io.RawIOBase):
    """A seekable read-only file over one object; each read is a ranged GET (wrap it in a
    BufferedReader so small reads share one request)."""

    def __init__(self, store: "S3Store", key: str, size: int) -> None:
        self.store, self.key, self.length, self.pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: Any) -> int:
        if self.pos >= self.length or len(b) == 0:
            return 0
        end = min(self.length, self.pos + len(b)) - 1
        s = self.store
        with _errors(f"reading {self.key}"):
            data = s.client.get_object(Bucket=s.bucket, Key=self.key, Range=f"bytes={self.pos}-{end}")["Body"].read()
        n = len(data)
        b[:n] = data
        self.pos += n
        return n


class S3Store(ObjectStore):
    kind = "s3"

    def __init__(self, cfg: S3Config) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.client = _client(cfg, cfg.endpoint_url)
        self._presigner = (_client(cfg, cfg.public_endpoint_url) if cfg.public_endpoint_url else self.client)
        self._bucket_checked = False

    def describe(self) -> str:
        where = f" at {self.cfg.endpoint_url}" if self.cfg.endpoint_url else ""
        return f"{self.cfg.url}{where}"

    def _key(self, key: str) -> str:
        return self.cfg.prefix + check_key(key)

    def _ensure_bucket(self) -> None:
        if self._bucket_checked or not self.cfg.create_bucket:
            return
        from botocore.exceptions import ClientError

        with _errors(f"creating bucket {self.bucket}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as exc2:  # another process created it meanwhile
                    if exc2.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_checked = True

    # -- objects ------------------------------------------------------------------------------

    def begin_upload(self, key: str) -> UploadSink:
        self._ensure_bucket()
        return _MultipartSink(self, self._key(key))

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:  # type: ignore[override]
        size = self.size(key)
        if size is None:
            raise ObjectMissing(key)
        reader = io.BufferedReader(_RangeReader(self, self._key(key), size), buffer_size=256 << 10)
        try:
            yield reader  # type: ignore[misc]
        finally:
            reader.close()

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.cfg.part_size, multipart_chunksize=self.cfg.part_size,
                              max_concurrency=4, use_threads=True)

    def fetch(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with _errors(f"downloading {key}"):
                self.client.download_file(self.bucket, self._key(key), str(tmp), Config=self._transfer())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, src: Path, *, sha256: str | None = None) -> None:
        self._ensure_bucket()
        extra = {"Metadata": {"sha256": sha256}} if sha256 else {}
        with _errors(f"uploading {key}"):
            self.client.upload_file(str(src), self.bucket, self._key(key), ExtraArgs=extra, Config=self._transfer())

    def stream(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        with _errors(f"reading {key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                with _errors(f"reading {key}"):
                    yield from body.iter_chunks(chunk)
            finally:
                body.close()

        return chunks()

    def size(self, key: str) -> int | None:
        try:
            with _errors(f"looking up {key}"):
                return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except ObjectMissing:
            return None

    def presigned_get(self, key: str, *, expires: int, disposition: str, content_type: str) -> str | None:
        if not self.cfg.presign:
            return None
        with _errors(f"signing {key}"):
            return self._presigner.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key),
                        "ResponseContentDisposition": disposition,
                        "ResponseContentType": content_type},
                ExpiresIn=min(expires, self.cfg.presign_expiry),
            )

    def list(self, prefix: str) -> list[ObjectInfo]:
        out = []
        full = self.cfg.prefix + prefix
        with _errors(f"listing {prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for o in page.get("Contents", []) or []:
                    out.append(ObjectInfo(o["Key"][len(self.cfg.prefix):], int(o["Size"]), o["LastModified"].timestamp()))
        return out

    def _unfinished(self, prefix: str) -> list[dict]:
        uploads = []
        with _errors(f"listing unfinished uploads under {prefix}"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=self.cfg.prefix + prefix):
                uploads.extend(page.get("Uploads", []) or [])
        return uploads

    def delete_prefix(self, prefix: str) -> int:
        keys = [self.cfg.prefix + i.key for i in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            with _errors(f"deleting {prefix}"):
                r = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in batch], "Quiet": True})
            if r.get("Errors"):
                e = r["Errors"][0]
                raise StorageUnavailable(f"deleting {prefix}: {e.get('Code')} {e.get('Message', '')}".strip())
        for u in self._unfinished(prefix):
            with _errors(f"aborting an upload under {prefix}"):
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
                except ObjectMissing:
                    pass
        return len(keys)

    def remove_abandoned(self, max_age: float) -> list[str]:
        """Abort multipart uploads started over ``max_age`` ago (their API process died)."""
        cutoff = time.time() - max_age
        removed = []
        for u in self._unfinished(""):
            if u["Initiated"].timestamp() < cutoff:
                with _errors("aborting an abandoned upload"):
                    try:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
                    except ObjectMissing:
                        continue
                removed.append(u["Key"][len(self.cfg.prefix):])
        return removed

    def check(self) -> None:
        """A real write, read and delete of a probe object: a store whose gateway answers while
        its volumes are not back yet (or whose credentials may list but not write) is not ready."""
        self._ensure_bucket()
        key = f"{self.cfg.prefix}_ready/{uuid.uuid4().hex}"
        with _errors(f"bucket {self.bucket}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"ok")
            try:
                if self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read() != b"ok":
                    raise StorageUnavailable(f"bucket {self.bucket}: a probe object read back wrong")
            finally:
                self.client.delete_object(Bucket=self.bucket, Key=key)
