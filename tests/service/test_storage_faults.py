"""The artifact store lost under a running job, end to end: real SeaweedFS, Celery, Redis, uvicorn.

Each test runs a job slow enough to kill the store (SIGKILL of the ``weed`` process, a server of
the test's own) after the job has downloaded its inputs and before it stores its artifacts, and
watches the job through the API the whole time (every answer must be a 200: the API keeps
serving while the store is down).  Checked:

* the store back within the backoff: the attempt that could not store its artifacts gives the
  job back with a backoff, the next attempt waits it out and succeeds; the artifact downloads
  with the SHA-256 the API reports and loads; nothing of the failed attempt is ever visible (no
  artifacts while the job waits), and nothing of it is left in the bucket afterwards.  What an
  attempt cut off *mid*-upload leaves (a complete object and an unfinished multipart upload under
  its attempt's prefix) is planted in the real bucket with boto3, since the instant of a kill
  cannot be placed inside a sub-second upload;
* the store left down: every attempt fails, the backoffs grow as configured, the job ends
  ``failed``/``storage_unavailable`` in bounded time with a message that says what happened
  (and not where the store is); meanwhile the API answers 503 with ``Retry-After`` wherever it
  needs the store, never a stack trace;
* embedded mode: an outage that outlasts two attempts but not the backoff budget does not fail
  the job (without the backoff the dispatcher would have used up all three attempts in seconds).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from prunekit.client import Client
from svc_helpers import (
    FAULT_ENV,
    KEY_A,
    TENANT_A,
    TS_SPEC,
    Models,
    Proc,
    SeaweedServer,
    WorkerPool,
    base_env,
    start_api,
    submit,
    wait_for,
)

pytestmark = pytest.mark.timeout(480)

# Slow enough that the store can be killed after the inputs are downloaded and before the
# artifacts are stored (capture, check and export of the example take seconds even on a fast machine).
SLOW = {"ratio": 0.5, "inputs": [{"shape": [8, 3, 128, 128]}]}
CELERY_DELAY = 6.0  # PRUNEKIT_STORAGE_RETRY_DELAY of the Celery stack: waits of 6 s, then 12 s
EMBEDDED_DELAY = 4.0  # of the embedded API: 4 s, then 8 s
ATTEMPTS = 3


class Watch:
    """Polls one job every 0.1 s in the background and keeps each distinct state with the
    (monotonic) time it was first seen.  Any answer but a 200 is recorded as a failure."""

    def __init__(self, url: str, job_id: str, key: str | None = KEY_A) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)
        self.job_id = job_id
        self.seen: list[tuple[float, dict]] = []
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self.http.get(f"/v1/jobs/{self.job_id}")
                if r.status_code != 200:
                    self.bad.append(f"{r.status_code}: {r.text[:300]}")
                else:
                    job = r.json()
                    key = (job["status"], job["attempts"], job["progress"]["stage"], job["progress"]["message"])
                    with self._cond:
                        if not self.seen or key != _key(self.seen[-1][1]):
                            self.seen.append((time.monotonic(), job))
                        self._cond.notify_all()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        return
            except httpx.HTTPError as exc:
                self.bad.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.1)

    def wait(self, predicate: Callable[[dict], bool], timeout: float, what: str) -> tuple[float, dict]:
        """The first state seen that satisfies ``predicate`` (waiting for it if need be)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, job in self.seen:
                    if predicate(job):
                        return t, job
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():  # out of time, or the job finished
                    raise AssertionError(f"no state of job {self.job_id} was {what}; seen: {self.states()}")
                self._cond.wait(min(left, 1.0))

    def states(self) -> list[str]:
        t0 = self.seen[0][0] if self.seen else 0.0
        return [f"+{t - t0:.1f}s {j['status']}#{j['attempts']} {j['progress']['message']}" for t, j in self.seen]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.http.close()


def _key(job: dict) -> tuple:
    return job["status"], job["attempts"], job["progress"]["stage"], job["progress"]["message"]


def _running(attempt: int) -> Callable[[dict], bool]:
    return lambda j: j["status"] == "running" and j["attempts"] == attempt


def _requeued(attempt: int) -> Callable[[dict], bool]:
    return lambda j: j["status"] == "queued" and j["attempts"] == attempt


def _finished(j: dict) -> bool:
    return j["status"] in ("succeeded", "failed", "cancelled")


def _computing(j: dict) -> bool:
    """Past downloading its inputs, not yet storing its artifacts."""
    return j["status"] == "running" and j["progress"]["stage"] not in ("starting", "load")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Deployment:
    url: str
    api: Proc
    server: SeaweedServer
    bucket: str
    prefix: str
    workers: WorkerPool | None = None
    key: str | None = KEY_A

    def kill_store_under_a_job(self, model: Path) -> tuple[str, Watch, float]:
        """Submit the slow job, wait until it is past downloading its inputs, SIGKILL the store.
        Returns the job id, its watch, and when the store died (monotonic)."""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as c:
            r = submit(c, model, SLOW)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        watch = Watch(self.url, job_id, self.key)
        try:
            watch.wait(_computing, 180, "past downloading its inputs")
            self.server.proc.kill_hard()  # type: ignore[union-attr]
        except BaseException:
            watch.close()
            raise
        return job_id, watch, time.monotonic()

    def keys(self, under: str = "") -> list[str]:
        return self.server.keys(self.bucket, self.prefix + under)

    def unfinished(self) -> list[str]:
        return sorted(u["Key"] for u in self.server.unfinished_uploads(self.bucket))

    def logs(self) -> str:
        text = self.api.log()
        if self.workers is not None and self.workers.current is not None:
            text += self.workers.current.log()
        return text

    def store_back(self) -> float:
        """Restart the store (same ports and data); returns when the API finds it ready (a real
        write and read), as monotonic time."""
        self.server.start()
        wait_for(lambda: httpx.get(self.url + "/readyz", timeout=30).status_code == 200, 60,
                 "the API to find the store ready again")
        return time.monotonic()


@pytest.fixture(scope="module")
def celery_outage(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    """An API and a Celery worker sharing no folder, on a SeaweedFS of their own (the tests kill it)."""
    root = tmp_path_factory.mktemp("storage-faults")
    server = SeaweedServer(root / "weed").start()
    bucket = server.make_bucket(f"pk-outage-{uuid.uuid4().hex[:8]}")
    common = dict(
        FAULT_ENV,
        PRUNEKIT_BROKER_URL=redis_url,
        PRUNEKIT_QUEUE_NAME="prunekit-storage-faults",  # never another stack's queue on this Redis
        PRUNEKIT_DATABASE_URL=f"sqlite:///{root / 'jobs.db'}",
        PRUNEKIT_API_KEYS=f"{KEY_A}={TENANT_A}",
        PRUNEKIT_JOB_MAX_ATTEMPTS=str(ATTEMPTS),
        PRUNEKIT_STORAGE_RETRY_DELAY=str(CELERY_DELAY),
        PRUNEKIT_STORAGE_RETRY_MAX_DELAY="60",
        **server.env(bucket),
    )
    workers = WorkerPool(base_env(**common, PRUNEKIT_DATA_DIR=str(root / "worker-data")), root / "logs")
    api: Proc | None = None
    try:
        workers.start()
        api, url = start_api(base_env(**common, PRUNEKIT_DATA_DIR=str(root / "api-data")), root / "logs" / "api.log")
        yield Deployment(url, api, server, bucket, "jobs/", workers)
    finally:
        if api is not None:
            api.stop()
        workers.stop()
        server.stop()


@pytest.fixture
def outage(celery_outage: Deployment) -> Deployment:
    """The Celery deployment with its store up (a previous test may have left it down)."""
    if not celery_outage.server.proc or not celery_outage.server.proc.alive():
        celery_outage.store_back()
    celery_outage.workers.ensure()  # type: ignore[union-attr]
    return celery_outage


def test_store_back_within_the_backoff_the_job_succeeds(outage: Deployment, models: Models,
                                                         tmp_path: Path) -> None:
    import torch

    d = outage
    c = httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60)
    job_id, watch, t_kill = d.kill_store_under_a_job(models.ts)
    try:
        t_req, queued = watch.wait(_requeued(1), 240, "the attempt to give the job back")
        assert watch.wait(_running(1), 1, "attempt 1")[1]["status"] == "running"  # it was running when the store died
        msg = queued["progress"]["message"]
        assert msg == ("requeued: the artifact store was unreachable while storing the artifacts (attempt 1 of "
                       f"{ATTEMPTS}); trying again in {CELERY_DELAY:.1f} s"), msg
        # Nothing of the attempt is visible while the job waits.
        r = c.get(f"/v1/jobs/{job_id}/artifacts")
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_artifacts", r.text

        t_back = d.store_back()
        assert t_back < t_req + CELERY_DELAY, "the store came back too late for this test's point"
        # What an attempt cut off mid-upload leaves under its own prefix: a complete artifact and
        # an unfinished multipart upload (see the module docstring).
        s3 = d.server.client()
        left = f"{d.prefix}artifacts/{job_id}/attempt-1/"
        s3.put_object(Bucket=d.bucket, Key=left + "report.json", Body=b"{}")
        upload = s3.create_multipart_upload(Bucket=d.bucket, Key=left + "model.pt")["UploadId"]
        s3.upload_part(Bucket=d.bucket, Key=left + "model.pt", UploadId=upload, PartNumber=1, Body=b"\0" * 4096)
        assert d.unfinished() == [left + "model.pt"]

        t_done, done = watch.wait(_finished, 300, "the job to finish")
        assert done["status"] == "succeeded" and done["attempts"] == 2, (done, watch.states())
        t_run2, _ = watch.wait(_running(2), 1, "attempt 2")
        # The backoff held the job back although a worker was idle and the sweeps ran every second.
        assert t_run2 - t_req >= CELERY_DELAY - 0.5, watch.states()
        assert t_run2 - t_req < CELERY_DELAY + 10, watch.states()  # and it ran once due
        assert not watch.bad, watch.bad
    finally:
        watch.close()

    with Client(d.url, api_key=KEY_A) as client:
        arts = {a["name"]: a for a in client.artifacts(job_id)}
        path = client.download(job_id, dest=tmp_path)  # checks the SHA-256 the API reports
    assert _sha256(path) == arts["model.pt"]["sha256"] and path.stat().st_size == arts["model.pt"]["size"]
    pruned = torch.jit.load(str(path))
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # Only the recorded attempt's objects, each complete with its digest; attempt 1's are gone,
    # its unfinished upload included.
    keys = d.keys(f"artifacts/{job_id}/")
    assert keys == sorted(f"{d.prefix}artifacts/{job_id}/attempt-2/{n}" for n in arts), keys
    for key in keys:
        head = d.server.client().head_object(Bucket=d.bucket, Key=key)
        assert head["Metadata"].get("sha256") == arts[key.rsplit("/", 1)[1]]["sha256"]
    assert d.unfinished() == []
    wait_for(lambda: d.keys(f"uploads/{job_id}/") == [], 20, "the job's uploads to be deleted")
    assert "Traceback" not in d.logs(), d.logs()[-4000:]
    print(f"store down {t_back - t_kill:.1f} s; attempt 2 started {t_run2 - t_req:.1f} s after the requeue; "
          f"job done {t_done - t_kill:.1f} s after the kill")
    c.close()


def test_store_left_down_the_job_fails_in_bounded_time(outage: Deployment, models: Models) -> None:
    d = outage
    c = httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60)
    r = submit(c, models.ts, TS_SPEC)  # a finished job, to ask for its files while the store is down
    assert r.status_code == 202, r.text
    finished = r.json()["id"]
    wait_for(lambda: c.get(f"/v1/jobs/{finished}").json()["status"] == "succeeded", 180, "a first job")
    job_id, watch, t_kill = d.kill_store_under_a_job(models.ts)
    try:
        # The API keeps answering: 503 + Retry-After where it needs the store, never a traceback.
        r = httpx.get(d.url + "/readyz", timeout=30)
        assert r.status_code == 503 and r.json()["checks"]["artifacts"]["ok"] is False, r.text
        for answer in (submit(c, models.ts, TS_SPEC), c.get(f"/v1/jobs/{finished}/artifacts/model.pt"),
                       c.delete(f"/v1/jobs/{finished}")):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "storage_unavailable", answer.text
            assert int(answer.headers["retry-after"]) > 0
            assert "Traceback" not in answer.text and d.server.endpoint not in answer.text
        assert c.get(f"/v1/jobs/{finished}").json()["status"] == "succeeded"  # nothing was deleted
        assert c.get("/v1/jobs").status_code == 200

        t_failed, failed = watch.wait(_finished, 300, "the job to finish")
        assert failed["status"] == "failed", (failed, watch.states())
        assert failed["attempts"] == ATTEMPTS
        err = failed["error"]
        assert err["code"] == "storage_unavailable", err
        assert err["message"].startswith("the artifact store was unreachable while downloading the job's files on "
                                         f"attempt {ATTEMPTS} of {ATTEMPTS}, the last, "), err
        assert f" after the job started: downloading uploads/{job_id}/model: Could not connect" in err["message"], err
        assert d.server.endpoint not in err["message"] and "127.0.0.1" not in err["message"], err

        # The backoff grew: 6 s after the attempt that could not store, 12 s after the next.
        t_req1, q1 = watch.wait(_requeued(1), 1, "the first requeue")
        t_req2, q2 = watch.wait(_requeued(2), 1, "the second requeue")
        assert "while storing the artifacts (attempt 1 of 3); trying again in 6.0 s" in q1["progress"]["message"]
        assert "while downloading the job's files (attempt 2 of 3); trying again in 12 s" in q2["progress"]["message"]
        # (Attempts 2 and 3 fail within a second or two, too briefly to be sure to see them run:
        # the requeue that ends attempt 2, and the failure that ends attempt 3, come after them.)
        assert t_req2 - t_req1 >= CELERY_DELAY - 0.5, watch.states()
        assert t_failed - t_req2 >= 2 * CELERY_DELAY - 0.5, watch.states()
        # Bounded: the waits (6 + 12 s), two attempts that fail on a refused connection, and the
        # sweeps' granularity (1 s) and resend spacing (3 s) at each resend.
        assert t_failed - t_req1 < 3 * CELERY_DELAY + 30, watch.states()
        assert not watch.bad, watch.bad
    finally:
        watch.close()
    assert "Traceback" not in d.logs(), d.logs()[-4000:]
    print(f"failed {t_failed - t_kill:.1f} s after the kill, {t_failed - t_req1:.1f} s after the first requeue: "
          f"{err['message']}")

    # Back again: the failed job's files can be deleted, and nothing of it stays in the bucket.
    d.store_back()
    assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert d.keys(f"uploads/{job_id}/") == [] and d.keys(f"artifacts/{job_id}/") == []
    assert d.unfinished() == []
    c.close()


def test_embedded_outage_shorter_than_the_backoff_budget(models: Models, tmp_path: Path) -> None:
    """The store stays down through two attempts; the waits (4 s, then 8 s) outlast it, so the
    third attempt succeeds.  Without them the dispatcher would have started attempts 2 and 3 the
    moment the job was queued, and both would have failed within a second or two."""
    server = SeaweedServer(tmp_path / "weed").start()
    bucket = f"pk-emb-outage-{uuid.uuid4().hex[:8]}"
    env = base_env(PRUNEKIT_DATA_DIR=str(tmp_path / "data"), PRUNEKIT_S3_CREATE_BUCKET="true",
                   PRUNEKIT_PROGRESS_INTERVAL="0.1", PRUNEKIT_HEARTBEAT_INTERVAL="0.5",
                   PRUNEKIT_JOB_MAX_ATTEMPTS=str(ATTEMPTS), PRUNEKIT_STORAGE_RETRY_DELAY=str(EMBEDDED_DELAY),
                   PRUNEKIT_STORAGE_RETRY_MAX_DELAY="60", **server.env(bucket))
    api, url = start_api(env, tmp_path / "api.log")
    d = Deployment(url, api, server, bucket, "jobs/", key=None)
    watch: Watch | None = None
    try:
        job_id, watch, t_kill = d.kill_store_under_a_job(models.ts)
        with Client(url) as client:
            t_req1, q1 = watch.wait(_requeued(1), 240, "the first requeue")
            t_req2, q2 = watch.wait(_requeued(2), 60, "the second requeue")
            assert "while storing the artifacts (attempt 1 of 3); trying again in 4.0 s" in q1["progress"]["message"]
            assert "while downloading the job's files (attempt 2 of 3); trying again in 8.0 s" in q2["progress"]["message"]
            t_back = d.store_back()
            assert t_back < t_req2 + 2 * EMBEDDED_DELAY, "the store came back too late for this test's point"
            t_done, done = watch.wait(_finished, 300, "the job to finish")
            assert done["status"] == "succeeded" and done["attempts"] == 3, (done, watch.states())
            t_run3, _ = watch.wait(_running(3), 1, "attempt 3")
            assert t_req2 - t_req1 >= EMBEDDED_DELAY - 0.5, watch.states()  # attempt 2 ran in between
            assert t_run3 - t_req2 >= 2 * EMBEDDED_DELAY - 0.5, watch.states()
            assert not watch.bad, watch.bad
            arts = {a["name"]: a for a in client.artifacts(job_id)}
            path = client.download(job_id, dest=tmp_path / "out")
        assert _sha256(path) == arts["model.pt"]["sha256"]
        keys = d.keys(f"artifacts/{job_id}/")
        assert keys == sorted(f"jobs/artifacts/{job_id}/attempt-3/{n}" for n in arts), keys
        assert d.unfinished() == []
        assert "Traceback" not in api.log(), api.log()[-4000:]
        print(f"store down {t_back - t_kill:.1f} s over attempts 1 and 2; job done {t_done - t_kill:.1f} s "
              "after the kill")
    finally:
        if watch is not None:
            watch.close()
        api.stop()
        server.stop()

