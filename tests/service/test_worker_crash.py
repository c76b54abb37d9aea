"""A worker killed with SIGKILL mid-job: the job is redelivered and ends within bounded time."""

from __future__ import annotations

import time

import pytest

from svc_helpers import SLOW_SPEC, Models, Stack, submit, wait_for, wait_job

pytestmark = pytest.mark.timeout(300)


def test_sigkilled_worker_job_is_redelivered_and_finishes(stack: Stack, models: Models) -> None:
    c = stack.client()
    # The slow spec keeps the job running for seconds, so the kill lands mid-job on any machine.
    r = submit(c, models.ts, SLOW_SPEC)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job, _ = wait_job(c, job_id, 120, until=("running", "succeeded", "failed"))
    assert job["status"] == "running", job
    assert job["attempts"] == 1

    killed = stack.workers.current
    assert killed is not None
    killed.kill_hard()  # the whole process group: main process and pool child, no goodbye
    t_kill = time.monotonic()
    assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # nobody told the store

    stack.workers.start()
    done, _ = wait_job(c, job_id, 150)
    elapsed = time.monotonic() - t_kill
    assert done["status"] in ("succeeded", "failed"), done
    if done["status"] == "succeeded":
        assert done["attempts"] >= 2, done
        assert done["result"]["params"]["after"] < done["result"]["params"]["before"]
        assert c.get(f"/v1/jobs/{job_id}/artifacts/model.pt").status_code == 200
    else:
        assert done["error"]["code"] and done["error"]["message"], done
    assert elapsed < 150
    running = c.get("/v1/jobs", params={"status": "running", "limit": 100}).json()["jobs"]
    assert running == []
    # No scratch left behind (the runner cleans up just after recording the outcome).
    work = stack.data_dir / "work" / job_id
    wait_for(lambda: not work.exists(), 30, "the job's scratch space to be removed")
