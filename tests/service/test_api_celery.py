"""The HTTP API with a real Celery worker and Redis: happy paths, bad inputs, tenants, cancel."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import time
from pathlib import Path

import httpx
import pytest

from prunekit.api import STAGES
from svc_helpers import KEY_A, KEY_B, MAX_UPLOAD, SD_SPEC, SLOW_SPEC, TS_SPEC, Models, Stack, submit, wait_job

pytestmark = pytest.mark.timeout(300)


def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] and err["message"], body
    assert "Traceback" not in resp.text
    return err


def _params(module) -> int:  # type: ignore[no-untyped-def]
    return sum(p.numel() for p in module.parameters())


def test_torchscript_job_runs_to_success(stack: Stack, models: Models, tmp_path: Path) -> None:
    import torch

    c = stack.client()
    r = submit(c, models.ts, TS_SPEC)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["input"]["format"] == "torchscript"
    assert job["input"]["filename"] == "resnet_mini.pt"
    assert job["input"]["size"] == models.ts.stat().st_size
    assert job["input"]["sha256"] == hashlib.sha256(models.ts.read_bytes()).hexdigest()

    done, seen = wait_job(c, job["id"])
    assert done["status"] == "succeeded", done
    running_stages = {s["progress"]["stage"] for s in seen if s["status"] == "running"}
    assert running_stages <= {"starting", *STAGES}, seen
    assert done["result"]["stages"] == list(STAGES), done["result"]
    assert set(done["result"]["stage_seconds"]) == set(STAGES)
    assert done["started_at"] and done["finished_at"] and done["created_at"] <= done["started_at"]
    res = done["result"]
    assert res["output_format"] == "torchscript"
    assert res["params"]["before"] == models.ts_params
    assert 0 < res["params"]["after"] < res["params"]["before"]
    assert res["params"]["reduction_percent"] > 0
    assert res["macs"]["after"] < res["macs"]["before"]
    assert res["check"]["passed"] is True and res["check"]["max_abs"] is not None
    assert isinstance(res["warnings"], list)

    arts = c.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]
    names = [a["name"] for a in arts]
    assert "model.pt" in names and "report.json" in names
    model_meta = next(a for a in arts if a["name"] == "model.pt")
    dl = c.get(model_meta["url"])
    assert dl.status_code == 200
    assert dl.headers["content-disposition"] == 'attachment; filename="resnet_mini-pruned.pt"'
    digest = hashlib.sha256(dl.content).hexdigest()
    assert dl.headers["x-content-sha256"] == digest == model_meta["sha256"]
    assert len(dl.content) == model_meta["size"]
    out = tmp_path / "pruned.pt"
    out.write_bytes(dl.content)
    pruned = torch.jit.load(str(out))
    y = pruned(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    assert _params(pruned) == res["params"]["after"] < models.ts_params

    report = c.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()
    assert report["params_after"] == res["params"]["after"]


def test_state_dict_job_gives_state_dict_manifest_and_loadable_model(stack: Stack, models: Models,
                                                                    tmp_path: Path) -> None:
    import torch

    import prunekit

    c = stack.client()
    r = submit(c, models.state_dict, SD_SPEC)
    assert r.status_code == 202, r.text
    assert r.json()["input"]["format"] == "state_dict"
    done, _ = wait_job(c, r.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["output_format"] == "state_dict"
    arts = {a["name"]: a for a in c.get(f"/v1/jobs/{done['id']}/artifacts").json()["artifacts"]}
    assert {"state_dict.pt", "manifest.json", "report.json"} <= set(arts)
    assert arts["manifest.json"]["filename"] == "resnet_mini_weights-pruned.manifest.json"
    for name in ("state_dict.pt", "manifest.json"):
        resp = c.get(arts[name]["url"])
        assert resp.status_code == 200
        (tmp_path / name).write_bytes(resp.content)
    load_pruned = getattr(prunekit, "load_pruned", None) or importlib.import_module("prunekit.io.rebuild").load_pruned
    model = load_pruned("zoo:resnet_mini", tmp_path / "state_dict.pt", tmp_path / "manifest.json")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert _params(model) == done["result"]["params"]["after"] < done["result"]["params"]["before"]


@pytest.mark.parametrize(
    "case, expected_code",
    [
        ("empty", "invalid_model_file"),
        ("random", "invalid_model_file"),
        ("truncated", "invalid_model_file"),
    ],
)
def test_unreadable_uploads_are_refused_with_422(stack: Stack, models: Models, case: str, expected_code: str) -> None:
    c = stack.client()
    r = submit(c, getattr(models, case), TS_SPEC)
    assert r.status_code == 422, r.text
    err = _error(r)
    assert err["code"] == expected_code
    if case == "empty":
        assert "empty" in err["message"]
    if case == "truncated":
        assert "truncated" in err["message"] or "damaged" in err["message"]
    assert c.get("/healthz").status_code == 200  # the service answers the next request
    assert list((stack.data_dir / "uploads" / ".incoming").iterdir()) == []  # nothing left behind


def test_pickle_that_runs_code_is_never_executed(stack: Stack, models: Models) -> None:
    c = stack.client()
    r = submit(c, models.evil, SD_SPEC)
    # The service never unpickles: the bytes look like a state-dict, so the job is accepted and
    # the worker, loading with weights_only=True, refuses it.
    assert r.status_code == 202, r.text
    done, _ = wait_job(c, r.json()["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "unsafe_model_file", done
    assert "Traceback" not in done["error"]["message"]
    assert not models.evil_marker.exists()
    assert not list(stack.data_dir.rglob("PWNED-marker"))
    assert c.get("/healthz").status_code == 200


def test_model_that_cannot_be_captured_fails_with_a_reason(stack: Stack, models: Models) -> None:
    c = stack.client()
    r = submit(c, models.uncapturable, {"ratio": 0.5, "inputs": [{"shape": [1, 3, 16, 16]}]})
    assert r.status_code == 202, r.text
    done, _ = wait_job(c, r.json()["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "capture_failed", done
    assert done["error"]["message"] and "\n  File " not in done["error"]["message"]
    assert c.get(f"/v1/jobs/{done['id']}/artifacts").status_code == 409


def test_invalid_spec_names_the_bad_field(stack: Stack, models: Models) -> None:
    c = stack.client()
    r = submit(c, models.ts, {"ratio": 0.5, "inputs": [{"shape": [1, 0, 32]}]})
    assert r.status_code == 422
    err = _error(r)
    assert err["code"] == "invalid_spec"
    assert any(d["path"] == "inputs.0.shape" for d in err["details"]), err

    r = submit(c, models.ts, {"ratios": 0.5})
    err = _error(r)
    assert r.status_code == 422 and any(d["path"] == "ratios" for d in err["details"]), err

    r = submit(c, models.ts, "{not json")
    assert r.status_code == 422 and _error(r)["code"] == "invalid_spec"


def test_state_dict_needs_a_registered_architecture(stack: Stack, models: Models) -> None:
    c = stack.client()
    r = submit(c, models.state_dict, {"ratio": 0.5})
    assert r.status_code == 422
    err = _error(r)
    assert err["code"] == "architecture_required" and "zoo:resnet_mini" in err["message"]

    r = submit(c, models.state_dict, {"architecture": "zoo:resnet_maxi", "ratio": 0.5})
    assert r.status_code == 422
    err = _error(r)
    assert err["code"] == "unknown_architecture"
    assert "zoo:resnet_mini" in err["details"][0]["registered"]


def test_oversized_uploads_get_413(stack: Stack, models: Models) -> None:
    c = stack.client()
    big = b"PK\x03\x04" + b"\0" * (MAX_UPLOAD + 100_000)
    r = c.post("/v1/jobs", files={"model": ("big.pt", big)}, data={"spec": json.dumps(TS_SPEC)})
    assert r.status_code == 413, r.text
    assert str(MAX_UPLOAD) in _error(r)["message"]

    # Without a Content-Length (chunked), the limit is enforced while streaming.
    boundary = "prunekitboundary"

    def body():  # type: ignore[no-untyped-def]
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n"
               f"{json.dumps(TS_SPEC)}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; "
               f"filename=\"big.pt\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        chunk = b"\0" * (256 << 10)
        for _ in range((MAX_UPLOAD // len(chunk)) + 4):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    r = c.post("/v1/jobs", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    assert c.get("/healthz").status_code == 200
    assert list((stack.data_dir / "uploads" / ".incoming").iterdir()) == []


def test_malformed_requests(stack: Stack, models: Models) -> None:
    c = stack.client()
    r = c.post("/v1/jobs", json={"spec": TS_SPEC})
    assert r.status_code == 415 and _error(r)["code"] == "unsupported_media_type"
    r = c.post("/v1/jobs", data={"spec": json.dumps(TS_SPEC)}, files={"other": ("x", b"123")})
    assert r.status_code == 422 and "other" in _error(r)["message"]
    r = c.post("/v1/jobs", files={"model": ("m.pt", models.ts.read_bytes())})
    assert r.status_code == 422 and _error(r)["code"] == "invalid_spec"
    r = c.post("/v1/jobs", files={"inputs": ("i", io.BytesIO(b"x"))}, data={"spec": json.dumps(TS_SPEC)})
    assert r.status_code == 422
    r = c.get("/v1/jobs", params={"status": "bogus"})
    assert r.status_code == 422 and _error(r)
    r = c.get("/v1/jobs", params={"cursor": "!!!"})
    assert r.status_code == 422 and _error(r)["code"] == "invalid_cursor"
    r = c.get("/v1/nowhere")
    assert r.status_code == 404 and _error(r)["code"] == "not_found"


def test_authentication_and_tenant_isolation(stack: Stack, models: Models) -> None:
    alice, bob = stack.client(KEY_A), stack.client(KEY_B)
    anon = httpx.Client(base_url=stack.url, timeout=30)
    try:
        r = anon.get("/v1/jobs")
        assert r.status_code == 401 and r.headers.get("www-authenticate", "").startswith("Bearer")
        assert _error(r)["code"] == "unauthorized"
        r = anon.get("/v1/jobs", headers={"Authorization": "Bearer wrong-key-000000"})
        assert r.status_code == 401
        assert anon.get("/healthz").status_code == 200  # operations endpoints need no key
    finally:
        anon.close()

    r = submit(alice, models.ts, TS_SPEC)
    assert r.status_code == 202
    job_id = r.json()["id"]
    done, _ = wait_job(alice, job_id)
    assert done["status"] == "succeeded"

    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/artifacts", f"/v1/jobs/{job_id}/artifacts/model.pt"):
        r = bob.get(path)
        assert r.status_code == 404, (path, r.text)
        assert _error(r)["code"] == "not_found"
    assert bob.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert job_id not in {j["id"] for j in bob.get("/v1/jobs", params={"limit": 100}).json()["jobs"]}
    assert job_id in {j["id"] for j in alice.get("/v1/jobs", params={"limit": 100}).json()["jobs"]}
    assert alice.get(f"/v1/jobs/{job_id}/artifacts/model.pt").status_code == 200
    # Path tricks reach nothing either.
    assert alice.get(f"/v1/jobs/{job_id}/artifacts/..%2F..%2Fjobs.db").status_code == 404

    # Deleting a finished job removes it and its files.
    assert alice.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 404
    assert not (stack.data_dir / "artifacts" / job_id).exists()


def test_list_is_newest_first_and_paginated(stack: Stack, models: Models) -> None:
    bob = stack.client(KEY_B)
    ids = []
    for _ in range(3):  # invalid specs are refused before queueing; use cheap failing jobs instead
        r = submit(bob, models.evil, SD_SPEC)
        assert r.status_code == 202
        ids.append(r.json()["id"])
    for job_id in ids:
        wait_job(bob, job_id)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = bob.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen[:3] == ids[::-1]
    assert len(seen) == len(set(seen))
    failed = bob.get("/v1/jobs", params={"status": "failed", "limit": 100}).json()["jobs"]
    assert {j["id"] for j in failed} >= set(ids)
    assert all(j["status"] == "failed" for j in failed)


def test_delete_cancels_a_running_job_and_frees_the_worker(stack: Stack, models: Models) -> None:
    c = stack.client()
    r = submit(c, models.ts, SLOW_SPEC)
    assert r.status_code == 202
    job_id = r.json()["id"]
    wait_job(c, job_id, 120, until=("running", "succeeded", "failed"))
    # Progress is written while the job runs: the slow job is seen inside an engine stage.
    deadline = time.monotonic() + 60
    while (job := c.get(f"/v1/jobs/{job_id}").json())["progress"]["stage"] not in STAGES:
        assert job["status"] == "running" and time.monotonic() < deadline, job
        time.sleep(0.05)
    assert 0 <= job["progress"]["percent"] < 100 and job["progress"]["message"], job
    r = c.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["error"]["code"] == "cancelled"

    # The worker stops the job: a small job submitted now finishes long before the slow one would have.
    t0 = time.monotonic()
    r = submit(c, models.ts, TS_SPEC)
    done, _ = wait_job(c, r.json()["id"], 120)
    assert done["status"] == "succeeded", done
    job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert c.get(f"/v1/jobs/{job_id}/artifacts").status_code == 409
    assert not (stack.data_dir / "artifacts" / job_id).exists()
    log = stack.workers.current.log() if stack.workers.current else ""
    assert "Terminating" in log or "stopped: job is now cancelled" in log, log[-3000:]
    assert time.monotonic() - t0 < 120

    # A second DELETE removes the cancelled job.
    assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert c.get(f"/v1/jobs/{job_id}").status_code == 404


def test_operations_endpoints(stack: Stack) -> None:
    c = stack.client()
    ready = c.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["mode"] == "celery"
    assert all(chk["ok"] for chk in body["checks"].values()) and set(body["checks"]) == {
        "job_store", "artifacts", "broker"}
    metrics = c.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'prunekit_jobs{status="succeeded"}' in text
    assert "prunekit_job_duration_seconds_bucket" in text
    assert "prunekit_queue_depth" in text and "prunekit_broker_queue_length" in text
    spec = c.get("/openapi.json").json()
    assert "/v1/jobs" in spec["paths"] and "/v1/jobs/{job_id}/artifacts/{name}" in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]


def test_example_inputs_file(stack: Stack, models: Models, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    inputs = tmp_path / "inputs.safetensors"
    save_file({"input_0": torch.randn(2, 3, 32, 32)}, str(inputs))
    c = stack.client()
    r = submit(c, models.ts, {"ratio": 0.5}, inputs=inputs)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["input"]["inputs"]["sha256"] == hashlib.sha256(inputs.read_bytes()).hexdigest()
    assert job["input"]["inputs"]["filename"] == "inputs.safetensors"
    done, _ = wait_job(c, job["id"])
    assert done["status"] == "succeeded", done

    r = submit(c, models.ts, {"ratio": 0.5}, inputs=models.random)
    assert r.status_code == 422 and _error(r)["code"] == "invalid_inputs_file"
