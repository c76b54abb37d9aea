"""The S3 artifact store end to end, against a real S3-compatible server (SeaweedFS).

The Celery stack here is the deployment the store exists for: an API and a Celery worker that
share **no directory** (each has its own DATA_DIR, and the job store is PostgreSQL when
``PRUNEKIT_TEST_POSTGRES_URL`` is set, else an SQLite file in a third folder): the bucket is the
only storage they share.  Checked: the artifact downloads with the SHA-256 the API reports and
loads; uploads stream into the bucket as multipart uploads while the client is still sending;
oversized, malformed and abandoned uploads leave nothing in the bucket; deleting a job deletes
its objects; a worker SIGKILLed mid-job still produces the job's artifacts on redelivery; a
presigned-URL download is handed out only after the tenant check; embedded mode works on the
S3 store too; and the store going down gives 503s and a failing ``/readyz``, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from prunekit.client import Client
from svc_helpers import (
    KEY_A,
    KEY_B,
    REDIS_URL,
    SD_SPEC,
    SLOW_SPEC,
    TENANT_A,
    TENANT_B,
    TS_SPEC,
    Models,
    Proc,
    SeaweedServer,
    WorkerPool,
    base_env,
    pg_schema,
    start_api,
    submit,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.timeout(400)

PG_URL = os.environ.get("PRUNEKIT_TEST_POSTGRES_URL")
S3_MAX_UPLOAD = 24 << 20
MLP_SPEC = {"ratio": 0.5, "inputs": [{"shape": [1, 64]}]}


@dataclass
class S3Stack:
    url: str
    api: Proc
    workers: WorkerPool
    api_data: Path
    worker_data: Path
    env: dict[str, str]
    bucket: str
    server: SeaweedServer

    def objects(self, prefix: str = "") -> list[str]:
        return self.server.keys(self.bucket, "jobs/" + prefix)


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def job_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL (a schema of its own) as in docker-compose, else SQLite in a folder of its own."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path_factory.mktemp('jobdb') / 'jobs.db'}"
        return
    with pg_schema(PG_URL, "prunekit_s3") as url:
        yield url


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, s3_server: SeaweedServer, job_db: str,
             redis_url: str) -> Iterator[S3Stack]:
    root = tmp_path_factory.mktemp("s3-stack")
    bucket = s3_server.make_bucket(f"pk-celery-{uuid.uuid4().hex[:8]}")
    common = dict(
        PRUNEKIT_BROKER_URL=redis_url,
        PRUNEKIT_QUEUE_NAME="prunekit-s3",  # never the queue of the other stacks on this Redis
        PRUNEKIT_DATABASE_URL=job_db,
        PRUNEKIT_API_KEYS=f"{KEY_A}={TENANT_A},{KEY_B}={TENANT_B}",
        PRUNEKIT_MAX_UPLOAD_BYTES=str(S3_MAX_UPLOAD),
        PRUNEKIT_VISIBILITY_TIMEOUT="600",
        PRUNEKIT_STALE_AFTER="5",
        PRUNEKIT_RECOVERY_INTERVAL="1",
        PRUNEKIT_RESEND_AFTER="3",
        PRUNEKIT_HEARTBEAT_INTERVAL="0.5",
        PRUNEKIT_PROGRESS_INTERVAL="0.1",
        PRUNEKIT_REAPER_INTERVAL="1",
        PRUNEKIT_JOB_MAX_ATTEMPTS="3",
        PRUNEKIT_JOB_TIME_LIMIT="300",
        **s3_server.env(bucket),
    )
    api_data, worker_data = root / "api-data", root / "worker-data"
    workers = WorkerPool(base_env(**common, PRUNEKIT_DATA_DIR=str(worker_data)), root / "logs")
    try:
        workers.start()
        env = base_env(**common, PRUNEKIT_DATA_DIR=str(api_data))
        api, url = start_api(env, root / "logs" / "api.log")
    except BaseException:
        workers.stop()
        raise
    try:
        yield S3Stack(url, api, workers, api_data, worker_data, env, bucket, s3_server)
    finally:
        api.stop()
        workers.stop()


@pytest.fixture
def stack3(s3_stack: S3Stack) -> S3Stack:
    s3_stack.workers.ensure()
    assert s3_stack.api.alive(), s3_stack.api.log()[-4000:]
    return s3_stack


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 13 MB TorchScript MLP: larger than two 5 MiB parts, still quick to prune."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 3072),
                                torch.nn.ReLU(), torch.nn.Linear(3072, 10)).eval()
    path = tmp_path_factory.mktemp("big") / "mlp.pt"
    torch.jit.trace(model, torch.randn(1, 64)).save(str(path))
    assert path.stat().st_size > 12 << 20
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_job_runs_on_a_worker_sharing_no_directory_with_the_api(stack3: S3Stack, models: Models,
                                                                tmp_path: Path) -> None:
    import torch

    assert stack3.api_data != stack3.worker_data
    with Client(stack3.url, api_key=KEY_A) as client:
        job = client.submit(models.ts, TS_SPEC)
        done = client.wait(job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert done["input"]["sha256"] == _sha256(models.ts)
        arts = {a["name"]: a for a in client.artifacts(job["id"])}
        path = client.download(job["id"], dest=tmp_path)
    assert _sha256(path) == arts["model.pt"]["sha256"] and path.stat().st_size == arts["model.pt"]["size"]
    assert path.name == "resnet_mini-pruned.pt"
    pruned = torch.jit.load(str(path))
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # The bucket holds the attempt's artifacts; the uploads went once the job finished.
    keys = stack3.objects(f"artifacts/{job['id']}/")
    assert keys == sorted(f"jobs/artifacts/{job['id']}/attempt-1/{n}" for n in arts), keys
    wait_for(lambda: stack3.objects(f"uploads/{job['id']}/") == [], 15, "the uploads to be deleted")
    head = stack3.server.client().head_object(Bucket=stack3.bucket, Key=keys[0])
    assert head["Metadata"].get("sha256") == arts[keys[0].rsplit("/", 1)[1]]["sha256"]
    # Neither side kept a file of the job: the bucket was the only storage they shared.
    assert not [f for f in _files_under(stack3.api_data) if job["id"] in f]
    wait_for(lambda: not [f for f in _files_under(stack3.worker_data) if job["id"] in f], 15,
             "the worker's scratch space to be removed")
    assert not (stack3.api_data / "uploads" / job["id"]).exists()


def test_upload_streams_into_the_bucket_while_the_client_sends(stack3: S3Stack, big_model: Path,
                                                               tmp_path: Path) -> None:
    """Parts reach the store before the upload ends (nothing buffers the whole file), and the
    job runs from the assembled object."""
    data = big_model.read_bytes()
    boundary = "prunekit-s3-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{json.dumps(MLP_SPEC)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"mlp.pt\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    halfway, seen = threading.Event(), threading.Event()
    split = 11 << 20

    def body() -> Iterator[bytes]:
        yield head
        for i in range(0, split, 1 << 20):
            yield data[i:i + (1 << 20)]
        halfway.set()
        seen.wait(60)  # the rest only once the test saw the parts in the store
        yield data[split:]
        yield tail

    result: dict = {}

    def send() -> None:
        with httpx.Client(base_url=stack3.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=120) as c:
            result["r"] = c.post("/v1/jobs", content=body(),
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert halfway.wait(60)
        uploads = wait_for(lambda: [u for u in stack3.server.unfinished_uploads(stack3.bucket)
                                    if u["Key"].startswith("jobs/uploads/") and u["Key"].endswith("/model")],
                           30, "a multipart upload of the model in the store")
        assert len(uploads) == 1

        def parts() -> list[dict]:
            return stack3.server.client().list_parts(Bucket=stack3.bucket, Key=uploads[0]["Key"],
                                                     UploadId=uploads[0]["UploadId"]).get("Parts", [])

        sent = wait_for(lambda: len(parts()) >= 2 and parts(), 30, "two 5 MiB parts in the store")
        assert all(p["Size"] == 5 << 20 for p in sent), sent
    finally:
        seen.set()
        sender.join(120)
    r = result["r"]
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert uploads[0]["Key"] == f"jobs/uploads/{job_id}/model"
    assert r.json()["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    with Client(stack3.url, api_key=KEY_A) as client:
        done = client.wait(job_id, timeout=180)
        assert done["status"] == "succeeded", done
        assert done["result"]["params"]["after"] < done["result"]["params"]["before"]
        path = client.download(job_id, dest=tmp_path)
    assert path.stat().st_size > 0
    assert [u for u in stack3.server.unfinished_uploads(stack3.bucket)] == []


def test_rejected_and_abandoned_uploads_leave_nothing_in_the_bucket(stack3: S3Stack, models: Models) -> None:
    c = httpx.Client(base_url=stack3.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60)
    before = stack3.objects("uploads/")
    # Format sniffing reads the head back from the store: random bytes and a truncated zip.
    for bad in (models.random, models.truncated, models.empty):
        r = submit(c, bad, TS_SPEC)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_model_file", (bad.name, r.text)
    # Over the limit while streaming: 413, the parts already sent are aborted.
    big = os.urandom(S3_MAX_UPLOAD + (6 << 20))
    r = c.post("/v1/jobs", files={"model": ("big.pt", big, "application/octet-stream")},
               data={"spec": json.dumps(TS_SPEC)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
    # A client that goes away mid-upload.

    def broken() -> Iterator[bytes]:
        yield (b"--bnd\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.pt\"\r\n\r\n")
        for _ in range(7):
            yield os.urandom(1 << 20)
        raise ConnectionAbortedError("the client gives up")

    with pytest.raises((ConnectionAbortedError, httpx.HTTPError)):
        c.post("/v1/jobs", content=broken(), headers={"Content-Type": "multipart/form-data; boundary=bnd"})
    wait_for(lambda: stack3.server.unfinished_uploads(stack3.bucket) == [], 30,
             "the abandoned multipart upload to be aborted")
    assert stack3.objects("uploads/") == before
    c.close()


def test_delete_removes_the_jobs_objects_and_tenants_stay_apart(stack3: S3Stack, models: Models) -> None:
    with Client(stack3.url, api_key=KEY_A) as alice, Client(stack3.url, api_key=KEY_B) as bob:
        job = alice.submit(models.state_dict, SD_SPEC)
        done = alice.wait(job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert sorted(done["result"]["artifacts"]) == ["manifest.json", "report.json", "state_dict.pt"]
        assert len(stack3.objects(f"artifacts/{job['id']}/")) == 3
        r = bob._http.get(f"/v1/jobs/{job['id']}/artifacts/state_dict.pt")
        assert r.status_code == 404, r.text
        assert bob._http.delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert alice.delete(job["id"]) is None
    assert stack3.objects(f"artifacts/{job['id']}/") == []
    assert stack3.objects(f"uploads/{job['id']}/") == []


def test_worker_killed_mid_job_still_completes_from_the_store(stack3: S3Stack, models: Models,
                                                              tmp_path: Path) -> None:
    c = httpx.Client(base_url=stack3.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60)
    r = submit(c, models.ts, SLOW_SPEC)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job, _ = wait_job(c, job_id, 120, until=("running", "succeeded", "failed"))
    assert job["status"] == "running", job
    wait_for(lambda: c.get(f"/v1/jobs/{job_id}").json()["progress"]["stage"] not in ("starting", "load"), 60,
             "the job to get past loading its inputs")
    stack3.workers.current.kill_hard()  # type: ignore[union-attr]
    stack3.workers.start()  # a fresh worker: a new scratch folder, the inputs come from the bucket again
    done, _ = wait_job(c, job_id, 200)
    assert done["status"] == "succeeded", done
    assert done["attempts"] >= 2
    keys = stack3.objects(f"artifacts/{job_id}/")
    assert keys and all(k.startswith(f"jobs/artifacts/{job_id}/attempt-{done['attempts']}/") for k in keys), keys
    with Client(stack3.url, api_key=KEY_A) as client:
        path = client.download(job_id, dest=tmp_path)
        assert _sha256(path) == next(a["sha256"] for a in client.artifacts(job_id) if a["name"] == "model.pt")
    wait_for(lambda: stack3.objects(f"uploads/{job_id}/") == [], 15, "the uploads to be deleted")
    c.close()


def test_presigned_downloads_only_after_the_tenant_check(stack3: S3Stack, models: Models, tmp_path: Path) -> None:
    env = {**stack3.env, "PRUNEKIT_S3_PRESIGN": "true", "PRUNEKIT_S3_PRESIGN_EXPIRY": "60",
           "PRUNEKIT_DATA_DIR": str(tmp_path / "api2")}
    api, url = start_api(env, tmp_path / "api2.log")
    try:
        with Client(url, api_key=KEY_A) as alice:
            job = alice.submit(models.ts, TS_SPEC)
            assert alice.wait(job["id"], timeout=180)["status"] == "succeeded"
            meta = next(a for a in alice.artifacts(job["id"]) if a["name"] == "model.pt")
            r = alice._http.get(f"/v1/jobs/{job['id']}/artifacts/model.pt")
            assert r.status_code == 307, r.text
            location = r.headers["location"]
            assert location.startswith(stack3.server.endpoint + "/") and "X-Amz-Signature=" in location
            assert r.headers["x-content-sha256"] == meta["sha256"]
            got = httpx.get(location, timeout=30)  # no API key: the URL is the credential
            assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == meta["sha256"]
            assert "resnet_mini-pruned.pt" in got.headers.get("content-disposition", "")
            path = alice.download(job["id"], dest=tmp_path)  # the client follows the redirect
            assert _sha256(path) == meta["sha256"]
            tampered = location.replace("X-Amz-Signature=", "X-Amz-Signature=0")
            assert httpx.get(tampered, timeout=30).status_code == 403
        with Client(url, api_key=KEY_B) as bob:
            r = bob._http.get(f"/v1/jobs/{job['id']}/artifacts/model.pt")
            assert r.status_code == 404 and "location" not in r.headers
    finally:
        api.stop()


def test_embedded_mode_on_the_s3_store(s3_server: SeaweedServer, models: Models, tmp_path: Path) -> None:
    bucket = f"pk-embedded-{uuid.uuid4().hex[:8]}"  # created by the API (PRUNEKIT_S3_CREATE_BUCKET)
    env = base_env(PRUNEKIT_DATA_DIR=str(tmp_path / "data"), PRUNEKIT_S3_CREATE_BUCKET="true",
                   PRUNEKIT_PROGRESS_INTERVAL="0.1", **s3_server.env(bucket, "emb/pk"))
    api, url = start_api(env, tmp_path / "api.log")
    try:
        with Client(url) as client:
            job = client.submit(models.state_dict, SD_SPEC)
            done = client.wait(job["id"], timeout=180)
            assert done["status"] == "succeeded", done
            paths = client.download_all(job["id"], tmp_path / "out")
            arts = {a["name"]: a for a in client.artifacts(job["id"])}
        assert sorted(p.name for p in paths) == sorted(a["filename"] for a in arts.values())
        for p in paths:
            name = next(n for n, a in arts.items() if a["filename"] == p.name)
            assert _sha256(p) == arts[name]["sha256"]
        keys = s3_server.keys(bucket, "emb/pk/")
        assert keys == sorted(f"emb/pk/artifacts/{job['id']}/attempt-1/{n}" for n in arts), keys
        assert not [f for f in _files_under(tmp_path / "data") if job["id"] in f]
        assert "Traceback" not in api.log()
    finally:
        api.stop()


def test_store_down_answers_503_and_readyz_fails(tmp_path: Path, models: Models) -> None:
    server = SeaweedServer(tmp_path / "weed").start()
    env = base_env(PRUNEKIT_DATA_DIR=str(tmp_path / "data"), PRUNEKIT_S3_CREATE_BUCKET="true",
                   PRUNEKIT_REAPER_INTERVAL="1", PRUNEKIT_API_KEYS=f"{KEY_A}={TENANT_A}",
                   **server.env("pk-down"))
    api, url = start_api(env, tmp_path / "api.log")
    c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60)
    try:
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"]["artifacts"]["ok"], r.text
        job = submit(c, models.ts, TS_SPEC).json()
        assert wait_job(c, job["id"], 180)[0]["status"] == "succeeded"

        server.stop()
        r = httpx.get(url + "/readyz", timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["artifacts"] == {"ok": False, "detail": "artifact store: unreachable"}
        assert r.json()["checks"]["job_store"]["ok"]
        r = c.get("/readyz")  # a key holder also sees why
        assert "artifact store: unreachable (" in r.json()["checks"]["artifacts"]["detail"]
        for attempt in (submit(c, models.ts, TS_SPEC),
                        c.get(f"/v1/jobs/{job['id']}/artifacts/model.pt"),
                        c.delete(f"/v1/jobs/{job['id']}")):
            assert attempt.status_code == 503, attempt.text
            assert attempt.json()["error"]["code"] == "storage_unavailable"
            assert "Traceback" not in attempt.text and server.endpoint not in attempt.text
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"  # nothing was deleted

        server.start()  # back, same ports and data
        wait_for(lambda: httpx.get(url + "/readyz", timeout=30).status_code == 200, 60, "readiness to return")
        r = c.get(f"/v1/jobs/{job['id']}/artifacts/model.pt")
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == r.headers["x-content-sha256"]
        job2 = submit(c, models.ts, TS_SPEC)
        assert job2.status_code == 202, job2.text
        assert wait_job(c, job2.json()["id"], 180)[0]["status"] == "succeeded"
        assert "Traceback" not in api.log(), api.log()[-3000:]
    finally:
        c.close()
        api.stop()
        server.stop()


def test_orphaned_and_unfinished_uploads_are_swept(s3_server: SeaweedServer, tmp_path: Path) -> None:
    """What an API that died mid-submission leaves (an unfinished multipart upload, uploads of a
    job never recorded) goes, and so do the files of finished jobs that nothing will read (a job
    that did not succeed has no artifacts to hand out: what its attempts stored goes too); what a
    live job needs, and a succeeded job's artifacts, stay."""
    from worker.settings import WorkerSettings
    from worker.storage import artifact_key, open_store, upload_key
    from worker.storage.cleanup import sweep_orphans
    from worker.store import JobStore

    bucket = s3_server.make_bucket(f"pk-sweep-{uuid.uuid4().hex[:8]}")
    env = s3_server.env(bucket)
    settings = WorkerSettings(data_dir=tmp_path, storage_url=env["PRUNEKIT_STORAGE_URL"],
                              s3_endpoint_url=env["PRUNEKIT_S3_ENDPOINT_URL"],
                              s3_access_key_id=env["PRUNEKIT_S3_ACCESS_KEY_ID"],
                              s3_secret_access_key=env["PRUNEKIT_S3_SECRET_ACCESS_KEY"],
                              s3_part_size=5 << 20)  # type: ignore[arg-type]
    objects = open_store(settings)
    jobs = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    orphan, live, finished, unfinished, done = (uuid.uuid4().hex for _ in range(5))
    for job_id in (live, finished, done):
        jobs.create(job_id=job_id, tenant="t", input={"size": 1}, spec={})
    jobs.cancel(finished)
    assert jobs.claim(done, worker="w", max_attempts=1, stale_after=60).attempt == 1
    assert jobs.succeed(done, 1, result={}, artifacts=[])
    for job_id in (orphan, live, finished, done):
        sink = objects.begin_upload(upload_key(job_id, "model"))
        sink.write(b"x" * 100)
        sink.commit()
    for job_id in (finished, done):  # an attempt's stored artifact
        sink = objects.begin_upload(artifact_key(job_id, 1, "model.pt"))
        sink.write(b"y" * 10)
        sink.commit()
    sink = objects.begin_upload(upload_key(unfinished, "model"))
    sink.write(os.urandom(6 << 20))  # one part sent, never completed
    assert len(s3_server.unfinished_uploads(bucket)) == 1

    assert sweep_orphans(objects, jobs, max_age=3600) == []  # all too young to judge
    time.sleep(1.5)
    removed = sweep_orphans(objects, jobs, max_age=1)
    assert len(removed) == 4, removed
    assert s3_server.unfinished_uploads(bucket) == []
    assert s3_server.keys(bucket) == sorted([f"jobs/uploads/{live}/model", f"jobs/artifacts/{done}/attempt-1/model.pt"])
    jobs.dispose()
