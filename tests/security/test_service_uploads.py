"""The attacks of this suite, sent to a real embedded service as a client would send them.

Each upload must end as a failed job with code ``unsafe_model_file`` or ``limit_exceeded`` and a
one-line reason, the payload must not have run (no marker file), and the service must keep
serving the next, honest job.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import httpx
import pytest

from crafted import (SPEC, edit_model_json, edit_setstate, edit_ts_source, honest_pt2, honest_stateful_ts, honest_ts,
                     pt2_payloads, setstate_payloads, ts_payloads)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from svc_helpers import base_env, start_api

    root = tmp_path_factory.mktemp("secapi")
    proc, url = start_api(base_env(PRUNEKIT_DATA_DIR=str(root / "data"), PRUNEKIT_HEARTBEAT_INTERVAL="1"),
                          root / "api.log")
    try:
        yield url
    finally:
        proc.stop()


def _files(tmp: Path) -> dict[str, tuple[Path, str]]:
    marker = tmp / "marker"
    pt2, ts = honest_pt2(tmp / "ok.pt2"), honest_ts(tmp / "ok.pt")
    out = {
        "pt2_sym_size": (edit_model_json(pt2, tmp / "a.pt2", pt2_payloads(marker)["sym_size"]), "unsafe_model_file"),
        "pt2_guards": (edit_model_json(pt2, tmp / "b.pt2", pt2_payloads(marker)["guards"]), "unsafe_model_file"),
        "pt2_file_op": (edit_model_json(pt2, tmp / "c.pt2", pt2_payloads(marker)["file_op"]), "unsafe_model_file"),
        "ts_setstate": (edit_ts_source(ts, tmp / "d.pt", ts_payloads(marker)["setstate_at_load"]), "unsafe_model_file"),
        "ts_writes": (edit_ts_source(ts, tmp / "e.pt", ts_payloads(marker)["forward_writes_a_file"]), "unsafe_model_file"),
        "ts_alias_at_load": (edit_setstate(honest_stateful_ts(tmp / "st.pt"), tmp / "f.pt",
                                           setstate_payloads(marker)["namespace_alias"]), "unsafe_model_file"),
    }
    bomb = honest_ts(tmp / "bomb.pt")
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/extra/zeros", bytes(64 << 20))
    out["zip_bomb"] = (bomb, "limit_exceeded")
    return out


def test_hostile_uploads_fail_as_jobs_with_a_reason_and_run_nothing(api: str, tmp_path: Path) -> None:
    from prunekit.client import Client

    files = _files(tmp_path)
    with Client(api) as client:
        jobs = {name: client.submit(path, SPEC)["id"] for name, (path, _) in files.items()}
        for name, job_id in jobs.items():
            done = client.wait(job_id, timeout=300)
            assert done["status"] == "failed", (name, done)
            assert done["error"]["code"] == files[name][1], (name, done["error"])
            assert "\n" not in done["error"]["message"] and "Traceback" not in done["error"]["message"]
        assert not (tmp_path / "marker").exists()
        assert httpx.get(api + "/healthz").status_code == 200
        honest = client.wait(client.submit(honest_pt2(tmp_path / "fine.pt2"), SPEC)["id"], timeout=300)
        assert honest["status"] == "succeeded", honest
