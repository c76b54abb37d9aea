"""Receive a multipart upload straight into the artifact store, hashing and size-checking on the way.

Starlette's own form parsing spools every file to a temporary file before the endpoint sees it,
so a size limit could only be checked after the whole upload had landed.  Here the request body
is fed to python-multipart's streaming parser as it arrives: each file part goes to an
:class:`~worker.storage.UploadSink` of the artifact store in chunks (a file in the local store's
``.incoming`` folder, or the parts of an S3 multipart upload; writes and hashing happen in a
worker thread, so the event loop keeps serving other requests), and the limit is enforced byte by
byte.  Memory use is bounded by the chunk size (plus one S3 part) whatever the upload size, and
nothing is spooled to the API's disk.  A part becomes visible under its key only once complete.

Time is bounded too: a client that sends nothing for ``idle_seconds``
(``PRUNEKIT_UPLOAD_IDLE_SECONDS``) or is still sending after ``max_seconds``
(``PRUNEKIT_UPLOAD_MAX_SECONDS``) is answered 408 and its parts are aborted; without this a
client trickling a byte a minute would hold its connection and an open upload in the store for
as long as it liked, and a few thousand of them every file descriptor of the API.

When a limit is exceeded the rest of the body is read and discarded (up to ``DRAIN_LIMIT``)
before the 413 is sent: a server that answers and closes mid-upload makes most HTTP clients
report a broken connection instead of the error.  The store failing mid-upload answers 503.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import anyio
from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartState, parse_options_header
from starlette.requests import ClientDisconnect

from worker.storage import StorageUnavailable, UploadSink

from .errors import ApiError

DRAIN_LIMIT = 256 << 20
FORM_OVERHEAD = 1 << 20  # boundaries and part headers, generously


class _TooLarge(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass
class ReceivedFile:
    field: str
    filename: str | None
    content_type: str | None
    key: str  # where it is in the artifact store
    size: int
    sha256: str


@dataclass
class ReceivedForm:
    files: dict[str, ReceivedFile] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


# field name → (store key, a sink writing to it)
OpenSink = Callable[[str], "tuple[str, UploadSink]"]


class _Part:
    """One part being received: a file streamed to the store, or a small text field kept in memory."""

    def __init__(self, name: str, filename: str | None, content_type: str | None, limit: int,
                 sink: tuple[str, UploadSink] | None) -> None:
        self.name, self.filename, self.content_type = name, filename, content_type
        self.limit = limit
        self.key, self.sink = sink if sink is not None else (None, None)
        self.to_store = sink is not None
        self.buf = bytearray()
        self.size = 0
        self.done = False
        self.closed = False
        self._hash = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            what = f"file '{self.name}'" if self.to_store else f"field '{self.name}'"
            raise _TooLarge(f"the {what} is larger than the limit of {self.limit} bytes")
        self.buf += data

    def flush(self) -> None:
        """Hand the buffered bytes to the store; commit once the part is complete (worker thread)."""
        if self.sink is None:
            return
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            self._hash.update(data)
            self.sink.write(data)
        if self.done:
            self.sink.commit()
            self.closed = True

    def discard(self) -> None:
        """Drop a part that did not complete (a committed one is removed with the job's files)."""
        if self.sink is not None and not self.closed:
            self.sink.abort()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


async def _drain(chunks: AsyncIterator[bytes], already: int, seconds: float = 60.0) -> None:
    """Read and drop the rest of the body so the client can read our error response (at most
    ``DRAIN_LIMIT`` bytes, for at most ``seconds``)."""
    seen = already
    try:
        async for chunk in _timed(chunks, seconds, seconds):
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                return
    except (ClientDisconnect, _TooSlow):
        return


class _TooSlow(Exception):
    pass


async def _timed(chunks: AsyncIterator[bytes], idle: float, total: float) -> AsyncIterator[bytes]:
    """``chunks``, each awaited at most ``idle`` seconds, all of them within ``total`` seconds."""
    deadline = time.monotonic() + total
    it = chunks.__aiter__()
    while True:
        wait = min(idle, deadline - time.monotonic())
        with anyio.move_on_after(max(wait, 0)) as scope:
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                return
        if scope.cancelled_caught:
            if wait < idle:
                raise _TooSlow(f"the upload was still arriving after {total:g} seconds")
            raise _TooSlow(f"no bytes of the upload arrived for {idle:g} seconds")
        yield chunk


async def receive_multipart(
    request: Request,
    open_sink: OpenSink,
    *,
    file_fields: set[str],
    text_fields: set[str],
    max_file_bytes: int,
    max_text_bytes: int,
    chunk_bytes: int = 1 << 20,
    idle_seconds: float = 60.0,
    max_seconds: float = 3600.0,
) -> ReceivedForm:
    """Parse a multipart/form-data body; files in ``file_fields`` go to the sinks ``open_sink``
    gives for their field names.

    Raises ApiError: 415 (not multipart), 413 (over a limit), 422 (malformed or unknown field),
    400 (client went away), 408 (idle for ``idle_seconds``, or slower than ``max_seconds`` in all),
    503 (the artifact store failed).  Parts not complete are aborted.
    """
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "unsupported_media_type",
                       "send the job as multipart/form-data with a 'model' file and a 'spec' field")
    body_limit = max_file_bytes * len(file_fields) + max_text_bytes * len(text_fields) + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and len(declared) < 19 and int(declared) > body_limit:
        if int(declared) - body_limit <= DRAIN_LIMIT:
            await _drain(request.stream(), 0, idle_seconds)
        raise ApiError(413, "payload_too_large",
                       f"the upload ({int(declared)} bytes) is larger than this server accepts "
                       f"(model files up to {max_file_bytes} bytes)")

    parts: list[_Part] = []
    state: dict = {"headers": {}, "hname": bytearray(), "hvalue": bytearray(), "part": None}

    def on_part_begin() -> None:
        state["headers"] = {}
        state["part"] = None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hname"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hvalue"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][bytes(state["hname"]).lower()] = bytes(state["hvalue"])
        state["hname"].clear()
        state["hvalue"].clear()

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition"))
        name = disp.get(b"name", b"").decode("latin-1")
        raw_filename = disp.get(b"filename")
        filename = None
        if raw_filename is not None:
            try:
                filename = raw_filename.decode("utf-8")
            except UnicodeDecodeError:
                filename = raw_filename.decode("latin-1")
            filename = os.path.basename(filename.replace("\\", "/"))[:255] or None
        ctype_raw = state["headers"].get(b"content-type")
        if name not in file_fields and name not in text_fields:
            allowed = ", ".join(sorted(file_fields | text_fields))
            raise ApiError(422, "invalid_request", f"unexpected form field {name!r}; expected: {allowed}")
        if any(p.name == name for p in parts):
            raise ApiError(422, "invalid_request", f"form field {name!r} was sent more than once")
        to_store = name in file_fields
        part = _Part(name, filename, ctype_raw.decode("latin-1") if ctype_raw else None,
                     max_file_bytes if to_store else max_text_bytes, open_sink(name) if to_store else None)
        parts.append(part)
        state["part"] = part

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["part"].add(data[start:end])

    def on_part_end() -> None:
        if state["part"] is not None:
            state["part"].done = True

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )

    received = 0
    chunks = request.stream()  # one iterator: a second request.stream() would raise
    try:
        try:
            async for chunk in _timed(chunks, idle_seconds, max_seconds):
                received += len(chunk)
                if received > body_limit:
                    raise _TooLarge(f"the upload is larger than this server accepts "
                                    f"(model files up to {max_file_bytes} bytes)")
                parser.write(chunk)
                for p in parts:
                    if p.to_store and not p.closed and (p.done or len(p.buf) >= chunk_bytes):
                        await anyio.to_thread.run_sync(p.flush)
        except ApiError:
            await _drain(chunks, received, idle_seconds)
            raise
        except _TooLarge as exc:
            await _drain(chunks, received, idle_seconds)
            raise ApiError(413, "payload_too_large", str(exc)) from None
        except _TooSlow as exc:
            raise ApiError(408, "upload_timeout", f"{exc}; send the upload again "
                           "(PRUNEKIT_UPLOAD_IDLE_SECONDS, PRUNEKIT_UPLOAD_MAX_SECONDS)") from None
        except FormParserError as exc:
            raise ApiError(422, "invalid_request", f"malformed multipart body: {exc}") from None
        except ClientDisconnect:
            raise ApiError(400, "client_disconnected", "the client went away before the upload finished") from None
        except StorageUnavailable:  # answered 503 by the error handler (service.errors)
            await _drain(chunks, received, idle_seconds)
            raise
        if parser.state != MultipartState.END or any(not p.done for p in parts):
            raise ApiError(422, "invalid_request", "the multipart body is incomplete (no closing boundary)")
    except BaseException:
        for p in parts:
            p.discard()
        raise

    form = ReceivedForm()
    for p in parts:
        if p.to_store:
            assert p.key is not None
            form.files[p.name] = ReceivedFile(p.name, p.filename, p.content_type, p.key, p.size, p.sha256)
        else:
            form.fields[p.name] = bytes(p.buf).decode("utf-8", errors="replace")
    return form

