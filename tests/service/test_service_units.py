"""Fast checks of the service's parts in-process: formats, settings, naming, store, auth, readiness."""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from pathlib import Path

import pytest

from prunekit.artifacts import download_name
from prunekit.errors import InvalidModelFile
from service.formats import detect, detect_format, is_safetensors
from service.settings import Settings
from service.storage import content_disposition
from worker.runner import summarize_report
from worker.store import JobStore
from svc_helpers import Models


def test_format_detection(models: Models, tmp_path: Path) -> None:
    import torch

    assert detect_format(models.ts) == "torchscript"
    assert detect(models.state_dict) == ("state_dict", "zip")
    assert detect(models.evil) == ("state_dict", "pickle")  # by its first byte; never unpickled here
    m = torch.nn.Linear(3, 2)
    ep = torch.export.export(m, (torch.randn(1, 3),))
    pt2 = tmp_path / "m.pt2"
    torch.export.save(ep, str(pt2))
    assert detect_format(pt2) == "export"
    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file(m.state_dict(), str(st))
    assert detect(st) == ("state_dict", "safetensors")
    assert is_safetensors(st) and not is_safetensors(models.ts)
    bad_header = tmp_path / "bad.safetensors"
    bad_header.write_bytes(struct.pack("<Q", 6) + b"{oops}" + b"\0" * 8)
    assert not is_safetensors(bad_header)
    for path in (models.empty, models.random, models.truncated):
        with pytest.raises(InvalidModelFile):
            detect_format(path)


def test_api_keys_setting() -> None:
    s = Settings(api_keys="k-aaaaaaaa=alice, k-bbbbbbbb=bob")
    assert s.tenants_by_key == {"k-aaaaaaaa": "alice", "k-bbbbbbbb": "bob"}
    assert Settings(api_keys="").tenants_by_key == {}
    for bad in ("nokey", "short=alice", "k-aaaaaaaa="):
        with pytest.raises(ValueError):
            Settings(api_keys=bad)
    assert Settings(broker_url="  ").broker_url is None and Settings().embedded


def test_download_names() -> None:
    assert download_name("resnet50.pt", "model.pt") == "resnet50-pruned.pt"
    assert download_name("net.pt2", "model.pt2") == "net-pruned.pt2"
    assert download_name("w.safetensors", "state_dict.pt") == "w-pruned.pt"
    assert download_name("w.safetensors", "manifest.json") == "w-pruned.manifest.json"
    assert download_name("net.pt2", "report.json") == "net-pruned.report.json"
    assert download_name("dir\\sub\\w.pth", "sweep.png") == "w-pruned.sweep.png"
    assert download_name(None, "model.pt") == "model-pruned.pt"
    assert download_name('evil"\r\nX: y.pt', "model.pt") == "evil___X: y-pruned.pt"
    assert content_disposition("a.pt") == 'attachment; filename="a.pt"'
    cd = content_disposition("modèle-pruned.pt")
    assert cd.startswith('attachment; filename="mod_le-pruned.pt"') and "UTF-8''mod%C3%A8le-pruned.pt" in cd


def test_summarize_report() -> None:
    report = {"params_before": 200, "params_after": 50, "macs_before": 10, "macs_after": 5,
              "file_size_before": 1000, "file_size_after": 300,
              "check": {"max_abs": 1e-7, "max_rel": 1e-6, "passed": True}, "warnings": ["w1"]}
    arts = [{"name": "model.pt"}, {"name": "report.json"}]
    out = summarize_report(report, arts)
    assert out["params"] == {"before": 200, "after": 50, "reduction_percent": 75.0}
    assert out["macs"]["reduction_percent"] == 50.0
    assert out["output_format"] == "torchscript" and out["warnings"] == ["w1"]
    assert out["check"]["passed"] is True
    assert summarize_report({}, [])["params"]["reduction_percent"] is None


def _new(store: JobStore, job_id: str, tenant: str = "t") -> None:
    store.create(job_id=job_id, tenant=tenant, input={"format": "torchscript", "size": 1, "sha256": "0" * 64,
                                                      "path": "model.pt"}, spec={"ratio": 0.5})


def exercise_store(store: JobStore) -> None:
    """The job store's state machine; shared with the PostgreSQL test."""
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    for job_id in (a, b, c):
        _new(store, job_id)
    _new(store, "d" * 32, tenant="other")

    claim = store.claim(a, worker="w1", max_attempts=2, stale_after=0.5)
    assert claim.outcome == "claimed" and claim.attempt == 1
    assert store.claim(a, worker="w2", max_attempts=2, stale_after=0.5).outcome == "busy"
    assert store.progress(a, 1, "capture", 20.0, "capturing")
    time.sleep(0.7)  # the first attempt's heartbeat goes stale: a redelivery may take over
    claim2 = store.claim(a, worker="w2", max_attempts=2, stale_after=0.5)
    assert claim2.outcome == "claimed" and claim2.attempt == 2
    assert not store.progress(a, 1, "check", 60.0, "late write from the old attempt")  # fenced off
    assert store.succeed(a, 2, result={"ok": True}, artifacts=[{"name": "model.pt"}])
    assert store.claim(a, worker="w3", max_attempts=2, stale_after=0.5).outcome == "done"
    job = store.get(a)
    assert job is not None and job.status == "succeeded" and job.attempts == 2 and job.duration_s is not None

    assert store.claim(b, worker="w1", max_attempts=1, stale_after=0.5).outcome == "claimed"
    time.sleep(0.7)
    assert store.claim(b, worker="w2", max_attempts=1, stale_after=0.5).outcome == "exhausted"
    job = store.get(b)
    assert job is not None and job.status == "failed" and job.error_code == "worker_lost"

    assert store.cancel(c) and not store.cancel(c)
    assert store.claim(c, worker="w1", max_attempts=3, stale_after=1).outcome == "done"
    assert store.claim("e" * 32, worker="w1", max_attempts=3, stale_after=1).outcome == "missing"

    page1 = store.list("t", limit=2)
    assert [j.id for j in page1] == [c, b]
    page2 = store.list("t", limit=2, before_seq=page1[-1].seq)
    assert [j.id for j in page2] == [a]
    assert [j.id for j in store.list("t", status="failed")] == [b]
    assert store.get("d" * 32, tenant="t") is None

    counts = store.counts_by_status()
    assert counts["succeeded"] == 1 and counts["failed"] == 1 and counts["cancelled"] == 1 and counts["queued"] == 1
    stats = store.duration_stats([0.001, 1000.0])
    assert stats["succeeded"].count == 1 and stats["succeeded"].buckets[-1] == 1

    d = "d" * 32
    assert store.claim(d, worker="w1", max_attempts=3, stale_after=0.2).outcome == "claimed"
    assert store.reap(stale_after=0.2, lost_after=60, max_attempts=3) == []  # attempts left: wait
    time.sleep(0.4)
    assert store.reap(stale_after=0.2, lost_after=0.3, max_attempts=3) == [d]  # silent too long
    job = store.get(d)
    assert job is not None and job.status == "failed" and "worker lost" in (job.error_message or "")
    # The message states the silence measured (~0.4 s), not the stale_after setting (0.2 s).
    m = re.search(r"for (\d+\.\d) s", job.error_message or "")
    assert m and 0.4 <= float(m.group(1)) < 5, job.error_message
    assert store.delete(d) and store.get(d) is None


def exercise_upgrade_and_recovery(store: JobStore) -> None:
    """A table from before ``published_at``, ``version`` and ``retry_at`` gains them at startup,
    and the recovery queries (worker.recovery) work on it; shared with the PostgreSQL test."""
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE prunekit_jobs DROP COLUMN published_at")
        conn.exec_driver_sql("ALTER TABLE prunekit_jobs DROP COLUMN version")
        conn.exec_driver_sql("ALTER TABLE prunekit_jobs DROP COLUMN retry_at")
    store.dispose()
    upgraded = JobStore(store.url)
    try:
        columns = {c["name"] for c in sa.inspect(upgraded.engine).get_columns("prunekit_jobs")}
        assert {"published_at", "version", "retry_at"} <= columns
        lost, silent = "f" * 32, "9" * 32
        _new(upgraded, lost)
        _new(upgraded, silent)
        assert upgraded.claim(silent, worker="w1", max_attempts=3, stale_after=0.2).attempt == 1
        time.sleep(0.5)
        assert upgraded.resend_candidates(older_than=0.3) == [lost]
        stamp = upgraded.mark_published(lost, older_than=0.3)
        assert stamp is not None
        assert upgraded.mark_published(lost, older_than=0.3) is None  # one sender per interval
        assert upgraded.resend_candidates(older_than=0.3) == []
        upgraded.unmark_published(lost, stamp)  # the send failed: the next sweep may try
        assert upgraded.published_at(lost) is None and upgraded.resend_candidates(older_than=0.3) == [lost]

        (stale,) = upgraded.recover_stale(stale_after=0.2, max_attempts=3)
        assert stale.job_id == silent and stale.outcome == "requeued" and stale.published_at is not None
        assert 0.5 <= stale.silent_s < 5 and f"{stale.silent_s:.1f} s" in stale.message
        job = upgraded.get(silent)
        assert job is not None and job.status == "queued" and job.progress_message == stale.message
        assert upgraded.recover_stale(stale_after=0.2, max_attempts=3) == []  # acted on once
        assert not upgraded.heartbeat(silent, 1)  # the silent attempt is fenced off
        assert upgraded.claim(silent, worker="w2", max_attempts=3, stale_after=0.2).attempt == 2
    finally:
        upgraded.dispose()


def exercise_versions(store: JobStore) -> None:
    """Every change a client sees bumps the job's version; heartbeats and broker stamps do not;
    a row from before the column reads as version 0 and counts on from there.  Shared with the
    PostgreSQL test."""
    a, b = "1" * 32, "2" * 32
    _new(store, a)
    _new(store, b, tenant="other")
    heads = store.heads([a, b, "3" * 32])
    assert set(heads) == {a, b}  # a missing job is simply absent
    assert (heads[a].tenant, heads[a].status, heads[a].version) == ("t", "queued", 1)
    assert heads[b].tenant == "other"

    def version() -> int:
        return store.heads([a])[a].version

    claim = store.claim(a, worker="w", max_attempts=3, stale_after=60)
    assert version() == 2 and store.get(a).version == 2
    assert store.heartbeat(a, claim.attempt) and version() == 2  # invisible to clients
    assert store.progress(a, claim.attempt, "check", 50.0, "checking") and version() == 3
    assert not store.progress(a, claim.attempt + 1, "check", 60.0, "not mine") and version() == 3
    assert store.succeed(a, claim.attempt, result={}, artifacts=[]) and version() == 4
    assert store.mark_published(b, older_than=0) is not None and store.heads([b])[b].version == 1
    assert store.cancel(b) and store.heads([b])[b].version == 2

    with store.engine.begin() as conn:  # as an older version left it
        conn.exec_driver_sql("UPDATE prunekit_jobs SET version = NULL")
    assert version() == 0 and store.get(a).version is None
    assert store.delete(a) and store.heads([a]) == {}
    assert store.heads([b])[b].version == 0
    store.delete(b)


def exercise_retry_backoff(store: JobStore) -> None:
    """A job given back with a ``retry_at`` (its attempt could not reach the artifact store) is
    started by nothing before then: not claimed, not offered to the embedded dispatcher, not
    resent by a sweep; afterwards all three work as before.  Shared with the PostgreSQL test."""
    from datetime import timedelta

    from worker.store import utcnow

    job, other = "7" * 32, "8" * 32
    _new(store, job)
    _new(store, other)
    assert store.claim(job, worker="w1", max_attempts=3, stale_after=60).attempt == 1
    assert store.requeue(job, 1, retry_at=utcnow() + timedelta(seconds=1.5), message="requeued: store down")
    row = store.get(job)
    assert row is not None and row.status == "queued" and row.progress_message == "requeued: store down"
    assert store.due_queued() == [other]  # the waiting job is skipped, the one behind it is not
    early = store.claim(job, worker="w2", max_attempts=3, stale_after=60)
    assert early.outcome == "deferred"
    row = store.get(job)
    assert row is not None and row.status == "queued" and row.attempts == 1  # an early message changes nothing
    assert store.resend_candidates(older_than=0) == [other]
    assert store.mark_published(job, older_than=0) is None
    time.sleep(1.6)
    assert store.due_queued() == [job, other]
    assert store.resend_candidates(older_than=0) == [job, other]
    assert store.mark_published(job, older_than=0) is not None
    assert store.mark_published(job, older_than=30) is None  # still one send per RESEND_AFTER
    assert store.claim(job, worker="w2", max_attempts=3, stale_after=60).attempt == 2
    # The claim cleared the backoff: a lost-worker requeue (no retry_at) is startable at once.
    assert store.requeue(job, 2) and store.due_queued() == [job, other]


def test_storage_retry_wait_is_exponential_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.settings import WorkerSettings

    s = WorkerSettings(storage_retry_delay=2, storage_retry_max_delay=10)
    assert [s.storage_retry_wait(n) for n in range(1, 7)] == [2, 4, 8, 10, 10, 10]
    assert WorkerSettings(storage_retry_delay=0).storage_retry_wait(3) == 0
    assert WorkerSettings().storage_retry_wait(10**9) == 600  # the cap, not an overflow
    monkeypatch.setenv("PRUNEKIT_STORAGE_RETRY_DELAY", "5")
    monkeypatch.setenv("PRUNEKIT_STORAGE_RETRY_MAX_DELAY", "12")
    assert [WorkerSettings().storage_retry_wait(n) for n in (1, 2, 3)] == [5, 10, 12]
    monkeypatch.setenv("PRUNEKIT_STORAGE_RETRY_DELAY", "-1")
    with pytest.raises(ValueError, match="storage_retry_delay"):
        WorkerSettings()


def test_store_retry_backoff_sqlite(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        exercise_retry_backoff(store)
    finally:
        store.dispose()


def test_store_state_machine_sqlite(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        exercise_store(store)
        exercise_versions(store)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.dispose()


def test_store_upgrade_and_recovery_sqlite(tmp_path: Path) -> None:
    exercise_upgrade_and_recovery(JobStore(f"sqlite:///{tmp_path / 'jobs.db'}"))


def _app_client(tmp_path: Path, client_host: str, **settings: object):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from service.app import create_app

    app = create_app(Settings(data_dir=tmp_path / "data", **settings))  # type: ignore[arg-type]
    return TestClient(app, client=(client_host, 5555), raise_server_exceptions=False)


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_without_keys_only_loopback_is_served(tmp_path: Path) -> None:
    with _app_client(tmp_path, "203.0.113.7") as remote:
        r = remote.get("/v1/jobs")
        assert r.status_code == 401
        assert "PRUNEKIT_API_KEYS" in r.json()["error"]["message"]
        assert remote.get("/healthz").status_code == 200
    with _app_client(tmp_path, "127.0.0.1") as local:
        assert local.get("/v1/jobs").status_code == 200
    with _app_client(tmp_path, "::1") as local6:
        assert local6.get("/v1/jobs").status_code == 200


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_broker_down_means_not_ready_and_no_job(tmp_path: Path, models: Models) -> None:
    with _app_client(tmp_path, "127.0.0.1", broker_url="redis://127.0.0.1:1/0") as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable" and body["checks"]["broker"]["ok"] is False
        r = c.post("/v1/jobs", files={"model": ("m.pt", models.ts.read_bytes())},
                   data={"spec": json.dumps({"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]})})
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable"
        assert c.get("/v1/jobs").json()["jobs"] == []
        assert not any((tmp_path / "data" / "uploads").glob("*/model.pt"))


# -- example inputs: refused at submit exactly when the engine would refuse them ----------------

NO_DEFAULTS_ARCH = "test:resnet_mini_without_default_inputs"


@pytest.fixture
def arch_without_default_inputs() -> object:
    """resnet_mini registered a second time, with no default example inputs."""
    from prunekit import registry

    registry.list_architectures()  # load the zoo first, so it cannot replace ours later
    registry.register(NO_DEFAULTS_ARCH)(registry.get_architecture("zoo:resnet_mini").factory)
    yield NO_DEFAULTS_ARCH
    registry._REGISTRY.pop(NO_DEFAULTS_ARCH, None)


@pytest.fixture
def pt2_and_inputs(tmp_path: Path) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file

    from prunekit.registry import build

    example = torch.randn(1, 3, 32, 32)
    pt2 = tmp_path / "resnet_mini.pt2"
    torch.export.save(torch.export.export(build("zoo:resnet_mini"), (example,)), str(pt2))
    inputs = tmp_path / "inputs.safetensors"
    save_file({"input_0": example}, str(inputs))
    return pt2, inputs


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_missing_inputs_are_refused_at_submit(tmp_path: Path, models: Models, pt2_and_inputs: tuple[Path, Path],
                                             arch_without_default_inputs: str) -> None:
    pt2, inputs = pt2_and_inputs
    # A dead broker: a submission that passes every check answers 503 queue_unavailable.
    with _app_client(tmp_path, "127.0.0.1", broker_url="redis://127.0.0.1:1/0") as c:
        def post(model: Path, spec: dict, with_inputs: bool = False):  # type: ignore[no-untyped-def]
            files = {"model": (model.name, model.read_bytes())}
            if with_inputs:
                files["inputs"] = ("inputs.safetensors", inputs.read_bytes())
            return c.post("/v1/jobs", files=files, data={"spec": json.dumps(spec)})

        refused = [
            (models.ts, {"ratio": 0.5}),
            (models.ts, {"ratio": 0.5, "architecture": "zoo:resnet_mini"}),  # TorchScript gets no defaults
            (pt2, {"ratio": 0.5}),
            (models.state_dict, {"ratio": 0.5, "architecture": arch_without_default_inputs}),
        ]
        for model, spec in refused:
            r = post(model, spec)
            assert r.status_code == 422, (model.name, spec, r.text)
            err = r.json()["error"]
            assert err["code"] == "invalid_spec" and "inputs" in err["message"], err
            assert [d["path"] for d in err["details"]] == ["inputs"], err
            assert "Traceback" not in r.text
        accepted = [
            (models.ts, {"ratio": 0.5}, True),
            (models.ts, {"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]}, False),
            (pt2, {"ratio": 0.5}, True),
            (models.state_dict, {"ratio": 0.5, "architecture": "zoo:resnet_mini"}, False),  # its defaults
            (models.state_dict, {"ratio": 0.5, "architecture": arch_without_default_inputs}, True),
        ]
        for model, spec, with_inputs in accepted:
            r = post(model, spec, with_inputs)
            assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable", (model.name, spec, r.text)


def test_submit_inputs_rule_is_the_engines(tmp_path: Path, models: Models, pt2_and_inputs: tuple[Path, Path],
                                           arch_without_default_inputs: str) -> None:
    """Every combination of format, architecture, spec inputs and inputs file: the API refuses
    for want of inputs exactly when the engine's own input resolution would."""
    from prunekit.errors import InvalidSpec
    from prunekit.io.loading import load_model
    from prunekit.api import _signatures
    from prunekit.spec import parse_spec
    from service.errors import ApiError
    from service.routes.jobs import _validate_submission
    from service.uploads import ReceivedFile, ReceivedForm

    from worker.layout import Layout
    from worker.storage.local import LocalStore

    pt2, inputs = pt2_and_inputs
    objects = LocalStore(Layout(tmp_path / "store"))

    def received(name: str, path: Path) -> ReceivedFile:
        key = f"uploads/{'0' * 32}/{path.name}"
        if objects.size(key) is None:  # the API reads uploads back from the artifact store
            copy = tmp_path / f"copy-{path.name}"
            shutil.copyfile(path, copy)
            objects.put_file(key, copy)
        return ReceivedFile(name, path.name, None, key, path.stat().st_size, "0" * 64)

    loaded: dict[tuple[Path, str | None], object] = {}
    checked = 0
    for model in (models.ts, pt2, models.state_dict):
        for arch in (None, "zoo:resnet_mini", arch_without_default_inputs):
            for spec_inputs in (False, True):
                for inputs_file in (False, True):
                    spec = {"ratio": 0.5, **({"architecture": arch} if arch else {}),
                            **({"inputs": [{"shape": [1, 3, 32, 32]}]} if spec_inputs else {})}
                    form = ReceivedForm(fields={"spec": json.dumps(spec)})
                    form.files["model"] = received("model", model)
                    if inputs_file:
                        form.files["inputs"] = received("inputs", inputs)
                    try:
                        _validate_submission(form, objects)
                        api_refuses = False
                    except ApiError as exc:
                        if exc.code == "architecture_required":
                            continue  # a state-dict without an architecture: refused for that
                        assert exc.code == "invalid_spec" and exc.details[0]["path"] == "inputs", exc.message
                        api_refuses = True
                    key = (model, arch)
                    if key not in loaded:
                        loaded[key] = load_model(model, architecture=arch)
                    try:
                        _signatures(parse_spec(spec), loaded[key], inputs if inputs_file else None)  # type: ignore[arg-type]
                        engine_refuses = False
                    except InvalidSpec:
                        engine_refuses = True
                    assert api_refuses == engine_refuses, (model.name, spec, inputs_file)
                    checked += 1
    assert checked == 32  # 3 formats x 3 architectures x 4, less the 4 state-dicts without one
