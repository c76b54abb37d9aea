"""Embedded mode: no broker, no Redis, no keys: the API runs jobs in its own child processes.

Also exercises the Python client and the CLI commands against the real server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from prunekit import cli
from prunekit.client import Client, ServiceError
from prunekit.api import STAGES
from svc_helpers import SLOW_SPEC, TS_SPEC, Models

pytestmark = pytest.mark.timeout(300)


def test_embedded_happy_path_with_the_client(embedded_api: tuple[str, Path], models: Models,
                                             tmp_path: Path) -> None:
    import torch

    url, _ = embedded_api
    with Client(url) as client:  # loopback, no key: accepted
        job = client.submit(models.ts, TS_SPEC)
        assert job["status"] == "queued"
        stages: list[str] = []
        done = client.wait(job["id"], timeout=180, on_progress=lambda j: stages.append(j["progress"]["stage"]))
        assert done["status"] == "succeeded", done
        # Polling sees whichever stages it happens to catch (a fast machine may catch one); the
        # result records every stage the worker went through, in order, with its duration.
        assert set(stages) <= {"queued", "starting", *STAGES, "done"}, stages
        assert done["result"]["stages"] == list(STAGES), done["result"]
        assert set(done["result"]["stage_seconds"]) == set(STAGES)
        assert all(sec >= 0 for sec in done["result"]["stage_seconds"].values())
        path = client.download(job["id"], dest=tmp_path)
        assert path.name == "resnet_mini-pruned.pt"
        model = torch.jit.load(str(path))
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        assert sum(p.numel() for p in model.parameters()) == done["result"]["params"]["after"] < models.ts_params
        assert [j["id"] for j in client.list(limit=5)["jobs"]][0] == job["id"]
        with pytest.raises(ServiceError) as err:
            client.submit(models.empty, TS_SPEC)
        assert err.value.status == 422 and err.value.code == "invalid_model_file"
        ready = httpx.get(url + "/readyz").json()
        assert ready["mode"] == "embedded" and "broker" not in ready["checks"]
        assert ready["checks"]["worker"]["ok"] is True


def test_embedded_cancel_stops_the_job_process(embedded_api: tuple[str, Path], models: Models) -> None:
    url, _ = embedded_api
    with Client(url) as client:
        job = client.submit(models.ts, SLOW_SPEC)
        deadline = time.monotonic() + 120
        while client.get(job["id"])["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancelled = client.delete(job["id"])
        assert cancelled is not None and cancelled["status"] == "cancelled"
        t0 = time.monotonic()
        quick = client.submit(models.ts, TS_SPEC)
        done = client.wait(quick["id"], timeout=120)
        assert done["status"] == "succeeded", done
        assert time.monotonic() - t0 < 120
        assert client.get(job["id"])["status"] == "cancelled"
        assert client.delete(job["id"]) is None  # now deleted
        with pytest.raises(ServiceError) as err:
            client.get(job["id"])
        assert err.value.status == 404


def test_cli_submit_wait_download(embedded_api: tuple[str, Path], models: Models, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = embedded_api
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(TS_SPEC))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc = cli.main(["submit", str(models.ts), "--spec", str(spec_file), "--wait", "-o", str(out_dir),
                   "--server", url])
    assert rc == 0
    assert (out_dir / "resnet_mini-pruned.pt").is_file() and (out_dir / "resnet_mini-pruned.report.json").is_file()

    capsys.readouterr()
    rc = cli.main(["jobs", "--server", url, "--json"])
    assert rc == 0
    job_id = json.loads(capsys.readouterr().out)["jobs"][0]["id"]
    assert cli.main(["status", job_id, "--server", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    # The table shows ids in full on an 80-column terminal, and a unique prefix is accepted.
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["jobs", "--server", url]) == 0
    assert job_id in capsys.readouterr().out
    with Client(url) as client:
        others = [j["id"] for j in client.list(limit=100)["jobs"] if j["id"] != job_id]
    prefix = next(job_id[:n] for n in range(4, 33) if not any(o.startswith(job_id[:n]) for o in others))
    assert cli.main(["status", prefix, "--server", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job_id
    assert cli.main(["status", "not-hex!", "--server", url]) == 2
    assert "not a job id" in capsys.readouterr().err
    assert cli.main(["wait", job_id, "--server", url]) == 0
    assert "succeeded" in capsys.readouterr().out
    target = tmp_path / "single.pt"
    assert cli.main(["download", job_id, "-o", str(target), "--server", url]) == 0
    assert target.stat().st_size > 0
    # A bad spec: exit code 2 and the field's path on stderr.
    capsys.readouterr()
    assert cli.main(["submit", str(models.ts), "--spec", '{"ratio": 2}', "--server", url]) == 2
    assert "ratio" in capsys.readouterr().err
    # A failed job: exit code 1.
    rc = cli.main(["submit", str(models.uncapturable), "--spec",
                   '{"ratio": 0.5, "inputs": [{"shape": [1, 3, 16, 16]}]}', "--wait", "--server", url])
    assert rc == 1


def test_cli_help_is_available(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("serve", "worker", "submit", "status", "wait", "download", "jobs", "cancel"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([cmd, "--help"])
        assert exit_.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_embedded_time_limit_fails_the_job(tmp_path: Path, models: Models) -> None:
    from svc_helpers import base_env, start_api, wait_for

    env = base_env(PRUNEKIT_DATA_DIR=str(tmp_path / "data"), PRUNEKIT_JOB_TIME_LIMIT="2",
                   PRUNEKIT_JOB_TIME_LIMIT_GRACE="1")
    api, url = start_api(env, tmp_path / "api.log")
    try:
        with Client(url) as client:
            job = client.submit(models.ts, SLOW_SPEC)
            done = client.wait(job["id"], timeout=120)
            assert done["status"] == "failed", done
            assert done["error"]["code"] == "time_limit" and "2s" in done["error"]["message"]
            assert httpx.get(url + "/healthz").status_code == 200
        # Nothing of the job is left but its record (files go just after the outcome is recorded).
        data = tmp_path / "data"
        wait_for(lambda: not (data / "uploads" / job["id"]).exists() and not (data / "work" / job["id"]).exists(),
                 30, "the job's files to be removed")
    finally:
        api.stop()


def test_an_ambiguous_id_prefix_is_refused_with_the_candidates() -> None:
    from prunekit.cli_service import resolve_id
    from prunekit.client import ServiceError

    class Jobs:  # the one method resolve_id asks of the HTTP client
        def iter_jobs(self) -> list[dict]:
            return [{"id": "ab" + "0" * 30}, {"id": "ab" + "1" * 30}, {"id": "cd" + "2" * 30}]

    assert resolve_id(Jobs(), "C") == "cd" + "2" * 30
    assert resolve_id(Jobs(), "ab0") == "ab" + "0" * 30
    with pytest.raises(ServiceError) as err:
        resolve_id(Jobs(), "ab")
    assert err.value.code == "ambiguous_id" and "ab" + "1" * 30 in err.value.message
    with pytest.raises(ServiceError) as err:
        resolve_id(Jobs(), "ef")
    assert err.value.code == "not_found"
