"""A small Python client for the PruneKit HTTP service.

    from prunekit.client import Client
    c = Client("http://127.0.0.1:8000", api_key="...")
    job = c.submit("resnet.pt", {"ratio": 0.3, "inputs": [{"shape": [1, 3, 224, 224]}]})
    job = c.wait(job["id"])
    path = c.download(job["id"], dest="out/")

Uploads are streamed from disk and downloads written through a temporary file and checked
against the server's SHA-256 before they are renamed into place, so neither is ever held in
memory.  Every non-2xx answer becomes :class:`ServiceError` with the server's code and message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from .artifacts import MODEL_FORMATS
from .job_status import TERMINAL


class ServiceError(Exception):
    """The service refused a request (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, details: list | None = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else f"{message} ({code})")
        self.status, self.code, self.message = status, code, message
        self.details = details or []


def _spec_text(spec: Any) -> str:
    """A Spec, a dict, JSON text, or a path to a JSON file → JSON text."""
    if hasattr(spec, "model_dump"):
        return json.dumps(spec.model_dump(mode="json", exclude_unset=True))
    if isinstance(spec, dict):
        return json.dumps(spec)
    if isinstance(spec, Path):
        return spec.read_text()
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            return text
        if os.path.isfile(spec):
            return Path(spec).read_text()
        return text
    raise TypeError(f"spec must be a Spec, dict, JSON text or path, not {type(spec).__name__}")


def _pack_checkpoint(folder: Path) -> Path:
    """A zip (stored, not compressed: weights do not compress) of the folder's checkpoint files:
    ``config.json``, the safetensors weights and their index; other files stay home."""
    import tempfile
    import zipfile

    from .io.safety.archives import wanted

    names = [p for p in sorted(folder.iterdir()) if p.is_file() and wanted(p.name)]
    if not any(p.name == "config.json" for p in names):
        raise ServiceError(0, "invalid_model_file", f"{folder} is a folder without config.json (a checkpoint folder "
                           "holds config.json and model.safetensors)")
    tmp = Path(tempfile.mkdtemp(prefix="prunekit-upload-"))
    archive = tmp / f"{folder.name or 'checkpoint'}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in names:
            zf.write(p, arcname=p.name)
    return archive


def _raise_for(resp: httpx.Response) -> None:
    if resp.is_success or resp.status_code == 304:  # 304: only ever asked for (If-None-Match)
        return
    try:
        resp.read()
        err = resp.json().get("error", {})
        code, message, details = err.get("code", "error"), err.get("message", resp.reason_phrase), err.get("details")
    except (ValueError, AttributeError, httpx.HTTPError):
        code, message, details = "http_error", f"{resp.status_code} {resp.reason_phrase}", None
    raise ServiceError(resp.status_code, code, message, details)


class _Changes:
    """The latest job seen while waiting; calls ``on_progress`` when status or progress moved."""

    def __init__(self, on_progress: Callable[[dict], None] | None) -> None:
        self.on_progress, self.job, self._key = on_progress, None, None

    def __call__(self, job: dict) -> None:
        self.job = job
        key = (job["status"], job["progress"].get("stage"), job["progress"].get("percent"))
        if self.on_progress is not None and key != self._key:
            self.on_progress(job)
        self._key = key


class _Deadline:
    def __init__(self, job_id: str, timeout: float | None) -> None:
        self.job_id, self.timeout = job_id, timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self, cap: float) -> float:
        return cap if self.at is None else max(0.1, min(cap, self.at - time.monotonic()))

    def check(self, seen: _Changes) -> None:
        if self.at is not None and time.monotonic() > self.at:
            status = seen.job["status"] if seen.job else "unknown"
            raise TimeoutError(f"job {self.job_id} still {status} after {self.timeout}s")


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each event of a text/event-stream; comments and retry are skipped."""
    name, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data), event_id
            name, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


class Client:
    """Talks to one PruneKit server.  Usable as a context manager."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=10.0))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise ServiceError(0, "connection_error", f"cannot reach {self.base_url}: {exc}") from None
        _raise_for(resp)
        return resp

    # -- jobs ---------------------------------------------------------------------------------

    def submit(self, model_path: str | Path, spec: Any, inputs: str | Path | None = None,
               calibration: str | Path | None = None) -> dict:
        """Upload a model and a spec (and optional example inputs and calibration data, both
        safetensors files); returns the queued job.  A checkpoint folder (``config.json`` +
        safetensors weights) is sent as a zip of those files."""
        model_path = Path(model_path)
        opened: list = []
        packed = _pack_checkpoint(model_path) if model_path.is_dir() else None
        try:
            files: dict[str, Any] = {}
            for field, path in (("model", packed or model_path), ("inputs", inputs), ("calibration", calibration)):
                if path:
                    f = open(path, "rb")
                    opened.append(f)
                    files[field] = (Path(path).name, f, "application/octet-stream")
            # No read timeout on the upload itself: big models take a while on slow links.
            return self._request("POST", "/v1/jobs", files=files, data={"spec": _spec_text(spec)},
                                 timeout=httpx.Timeout(None, connect=10.0)).json()
        finally:
            for f in opened:
                f.close()
            if packed is not None:
                shutil.rmtree(packed.parent, ignore_errors=True)

    def get(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> dict:
        """One page: ``{"jobs": [...], "next_cursor": ...}``."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/jobs", params=params).json()

    def iter_jobs(self, status: str | None = None, page_size: int = 50) -> Iterator[dict]:
        """Every job, newest first, following the cursor."""
        cursor = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def wait(self, job_id: str, timeout: float | None = None,
             on_progress: Callable[[dict], None] | None = None, poll_interval: float = 0.5,
             events: bool = True) -> dict:
        """Wait until the job is succeeded, failed or cancelled; return it (never raises for a
        failed job: look at ``status`` and ``error``).  Raises TimeoutError after ``timeout``.

        Follows the server's event stream (``GET /v1/jobs/{id}/events``), which pushes every
        change of status and progress; where there is none (an older server, a proxy that cuts
        streams, the server's stream limit) it polls every ``poll_interval`` seconds with the
        job's ETag, which costs the server next to nothing while the job stands still.
        """
        deadline = _Deadline(job_id, timeout)
        seen = _Changes(on_progress)
        if events:
            job = self._wait_events(job_id, deadline, seen)
            if job is not None:
                return job
        return self._wait_polling(job_id, deadline, seen, poll_interval)

    def _wait_events(self, job_id: str, deadline: _Deadline, seen: _Changes) -> dict | None:
        """The finished job, or None when the server offers no usable stream (then poll)."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            read = deadline.left(60.0)  # the server sends a keep-alive at least every 15 s
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                       timeout=httpx.Timeout(read, connect=10.0)) as resp:
                    if resp.status_code != 200 or not resp.headers.get("content-type", "").startswith(
                            "text/event-stream"):
                        return None  # polling answers (or raises) in its place
                    failures = 0
                    for name, data, event_id in _sse_events(resp.iter_lines()):
                        if name == "job":
                            job = json.loads(data)
                            last_id = event_id or last_id
                            seen(job)
                            if job["status"] in TERMINAL:
                                return job
                        elif name == "end":
                            return seen.job if seen.job and seen.job["status"] in TERMINAL else self.get(job_id)
                        elif name == "gone":
                            raise ServiceError(404, "not_found", f"job {job_id} was deleted")
                        elif name == "timeout":
                            break  # the stream's time is up: reconnect
                        deadline.check(seen)
            except httpx.ReadTimeout:
                pass  # silent for longer than the heartbeats: the deadline decides below
            except httpx.TransportError:
                failures += 1
                if failures >= 3:
                    return None
                time.sleep(min(2.0, 0.2 * 2 ** failures))
            deadline.check(seen)

    def _wait_polling(self, job_id: str, deadline: _Deadline, seen: _Changes, poll_interval: float) -> dict:
        etag: str | None = None
        while True:
            resp = self._request("GET", f"/v1/jobs/{job_id}", headers={"If-None-Match": etag} if etag else {})
            if resp.status_code != 304 or seen.job is None:
                seen(resp.json())
                etag = resp.headers.get("etag")
            job = seen.job
            assert job is not None
            if job["status"] in TERMINAL:
                return job
            deadline.check(seen)
            time.sleep(poll_interval)

    def artifacts(self, job_id: str) -> list[dict]:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]

    def download(self, job_id: str, name: str | None = None, dest: str | Path = ".", *,
                 on_progress: Callable[[int, int], None] | None = None) -> Path:
        """Download one artifact (default: the pruned model) to ``dest`` (a file, or a folder
        where the server's file name is used); verifies its SHA-256.  Returns the path."""
        arts = self.artifacts(job_id)
        if name is None:
            meta = next((a for a in arts if a["name"] in MODEL_FORMATS), None)
        else:
            meta = next((a for a in arts if a["name"] == name), None)
        if meta is None:
            have = ", ".join(a["name"] for a in arts)
            raise ServiceError(404, "not_found", f"job {job_id} has no artifact {name or 'model'!r} (it has: {have})")
        dest = Path(dest)
        target = dest / meta["filename"] if dest.is_dir() or str(dest).endswith(os.sep) else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        h = hashlib.sha256()
        try:
            # A server whose artifacts are in S3 may answer 307 with a presigned URL of the
            # object: followed (httpx drops our Authorization header on the way to another
            # host), and the bytes are still checked against the SHA-256 the server reported.
            with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{meta['name']}", follow_redirects=True,
                                   timeout=httpx.Timeout(None, connect=10.0)) as resp:
                _raise_for(resp)
                total = int(resp.headers.get("content-length") or meta["size"])
                expected = meta["sha256"]
                done = 0
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_bytes(1 << 20):
                        f.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if on_progress is not None:
                            on_progress(done, total)
            if h.hexdigest() != expected:
                raise ServiceError(0, "checksum_mismatch",
                                   f"downloaded {meta['name']} does not match its SHA-256; try again")
            os.replace(tmp, target)
        except httpx.TransportError as exc:
            raise ServiceError(0, "connection_error", f"download interrupted: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def download_all(self, job_id: str, dest_dir: str | Path, *,
                     on_progress: Callable[[str, int, int], None] | None = None) -> list[Path]:
        """Every artifact of the job (model, manifest, report) into ``dest_dir``."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        out = []
        arts = self.artifacts(job_id)
        # a checkpoint is a folder whose files keep their names (load_pruned(folder) reads them)
        folder = any(MODEL_FORMATS.get(a["name"]) == "checkpoint" for a in arts)
        for a in arts:
            cb = (lambda d, t, n=a["name"]: on_progress(n, d, t)) if on_progress else None
            out.append(self.download(job_id, a["name"], dest_dir / a["name"] if folder else dest_dir, on_progress=cb))
        return out

    def delete(self, job_id: str) -> dict | None:
        """Cancel an active job (returns it) or delete a finished one (returns None)."""
        resp = self._request("DELETE", f"/v1/jobs/{job_id}")
        return resp.json() if resp.status_code == 202 else None
