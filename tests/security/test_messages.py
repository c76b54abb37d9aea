"""What refusals and unauthenticated answers say: enough to fix the problem, nothing more.

* ``/readyz`` needs no key, so without one it names its checks generically and never shows the
  data folder's path or a dependency's error text (those are for key holders and the log);
* a prune that ``min_channels`` or ``round_to`` reduce to nothing is refused naming those fields,
  not the ratio;
* a bad setting stops ``prunekit serve`` / ``prunekit worker`` with one line naming the
  environment variable (and not its value), instead of pydantic's traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prunekit.errors import InvalidSpec

KEY = "ops-key-0123456789"
INPUTS = [{"shape": [1, 3, 32, 32]}]
REPO = Path(__file__).resolve().parents[2]


# -- /readyz -----------------------------------------------------------------------------------


def _client(tmp_path: Path, **settings: object):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", **settings))  # type: ignore[arg-type]
    return TestClient(app, client=("127.0.0.1", 5555), raise_server_exceptions=False)


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_readyz_shows_paths_only_to_key_holders(tmp_path: Path) -> None:
    data = str((tmp_path / "data").resolve())
    with _client(tmp_path, api_keys=f"{KEY}=ops") as c:
        for headers in ({}, {"Authorization": "Bearer not-the-key-at-all"}, {"Authorization": KEY}):
            r = c.get("/readyz", headers=headers)
            assert r.status_code == 200, r.text
            assert data not in r.text and str(tmp_path) not in r.text, (headers, r.text)
            checks = r.json()["checks"]
            assert checks["artifacts"] == {"ok": True, "detail": "artifact store: ok"}
            assert checks["job_store"] == {"ok": True, "detail": "job store: ok"}
            assert checks["worker"] == {"ok": True, "detail": "job supervisor: ok"}
        r = c.get("/readyz", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and data in r.json()["checks"]["artifacts"]["detail"]
    with _client(tmp_path) as local:  # no keys configured: nobody holds one, loopback or not
        r = local.get("/readyz")
        assert r.status_code == 200 and data not in r.text and str(tmp_path) not in r.text


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_readyz_failures_are_generic_without_a_key(tmp_path: Path) -> None:
    with _client(tmp_path, api_keys=f"{KEY}=ops", broker_url="redis://127.0.0.1:1/0") as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        broker = r.json()["checks"]["broker"]
        assert broker == {"ok": False, "detail": "broker: unreachable"}, broker
        assert "127.0.0.1:1" not in r.text and "Error" not in r.text
        r = c.get("/readyz", headers={"Authorization": f"Bearer {KEY}"})
        detail = r.json()["checks"]["broker"]["detail"]
        assert r.status_code == 503 and detail.startswith("broker: unreachable (") and len(detail) > 30


# -- min_channels / round_to refusals ------------------------------------------------------------


def _refusal(spec: dict) -> InvalidSpec:
    import prunekit
    from prunekit.registry import build

    with pytest.raises(InvalidSpec) as err:
        prunekit.prune(build("zoo:resnet_mini"), {"inputs": INPUTS, **spec})
    return err.value


def test_min_channels_refusal_names_min_channels() -> None:
    err = _refusal({"ratio": 0.5, "min_channels": 1000})
    assert "min_channels 1000" in str(err) and "ratio" not in str(err), str(err)
    assert "64" in str(err)  # the widest group it met
    assert [d["path"] for d in err.details] == ["min_channels"]  # type: ignore[attr-defined]
    err = _refusal({"ratio": 0.5, "min_channels": 64, "global_ranking": True})
    assert "min_channels 64" in str(err) and "ratio" not in str(err), str(err)
    err = _refusal({"layers": {"layer2.0.conv1.weight": 0.5}, "min_channels": 32})
    assert "min_channels 32" in str(err) and "ratio 0.0" not in str(err), str(err)


def test_round_to_refusal_names_round_to() -> None:
    err = _refusal({"ratio": 0.5, "round_to": 1000})
    assert "round_to 1000" in str(err) and "ratio" not in str(err), str(err)
    assert [d["path"] for d in err.details] == ["round_to"]  # type: ignore[attr-defined]
    err = _refusal({"ratio": 0.5, "round_to": 1000, "global_ranking": True})
    assert "round_to 1000" in str(err), str(err)
    err = _refusal({"ratio": 0.5, "min_channels": 33, "round_to": 64})  # 16, 32: min_channels; 64: round_to
    assert "min_channels 33" in str(err) and "round_to 64" in str(err), str(err)


def test_a_ratio_too_small_is_still_the_ratios_fault() -> None:
    err = _refusal({"ratio": 0.01})
    assert "ratio 0.01" in str(err) and "min_channels" not in str(err) and "round_to" not in str(err)


def test_spec_validation_names_min_channels_and_round_to() -> None:
    from prunekit.spec import parse_spec

    for field, value in (("min_channels", 0), ("round_to", 0), ("round_to", 2.5), ("min_channels", "x")):
        with pytest.raises(InvalidSpec) as err:
            parse_spec({"ratio": 0.5, field: value})
        assert [d["path"] for d in err.value.details] == [field], str(err.value)  # type: ignore[attr-defined]


# -- bad settings stop the CLI with one line ------------------------------------------------------


def _prunekit(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRUNEKIT_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO), clean.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "prunekit.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**clean, **env})


def _one_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr and "pydantic" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_short_api_key_stops_serve_with_one_line(tmp_path: Path) -> None:
    line = _one_line(_prunekit("serve", "--port", "1", PRUNEKIT_API_KEYS="short=alice",
                               PRUNEKIT_DATA_DIR=str(tmp_path / "data")))
    assert "PRUNEKIT_API_KEYS: keys must be at least 8 characters" in line, line
    assert "short" not in line.replace("PRUNEKIT_", "")  # the key itself is never echoed
    line = _one_line(_prunekit("serve", "--port", "1", PRUNEKIT_API_KEYS="no-tenant-given",
                               PRUNEKIT_DATA_DIR=str(tmp_path / "data")))
    assert "PRUNEKIT_API_KEYS" in line and "key=tenant" in line and "no-tenant-given" not in line, line
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_bad_setting_stops_serve_and_worker_with_one_line(tmp_path: Path) -> None:
    line = _one_line(_prunekit("serve", "--port", "1", PRUNEKIT_JOB_TIME_LIMIT="an hour",
                               PRUNEKIT_DATA_DIR=str(tmp_path / "data")))
    assert "PRUNEKIT_JOB_TIME_LIMIT" in line and "integer" in line, line
    line = _one_line(_prunekit("worker", PRUNEKIT_BROKER_URL="redis://127.0.0.1:1/0",
                               PRUNEKIT_HEARTBEAT_INTERVAL="-1", PRUNEKIT_DATA_DIR=str(tmp_path / "data")))
    assert "PRUNEKIT_HEARTBEAT_INTERVAL" in line and "greater than 0" in line, line


def test_bad_storage_settings_are_named_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from service.settings import Settings
    from worker.cli import settings_problem

    cases = [
        ({"PRUNEKIT_STORAGE_URL": "gs://bucket/x"}, "PRUNEKIT_STORAGE_URL", "s3://bucket"),
        ({"PRUNEKIT_STORAGE_URL": "s3://B_a_d/x"}, "PRUNEKIT_STORAGE_URL", "bucket name"),
        ({"PRUNEKIT_STORAGE_URL": "s3://bucket/../x"}, "PRUNEKIT_STORAGE_URL", "prefix"),
        ({"PRUNEKIT_STORAGE_URL": "s3://bucket", "PRUNEKIT_S3_ENDPOINT_URL": "seaweedfs:8333"},
         "PRUNEKIT_S3_ENDPOINT_URL", "http://"),
        ({"PRUNEKIT_STORAGE_URL": "s3://bucket", "PRUNEKIT_S3_PART_SIZE": "1000"}, "PRUNEKIT_S3_PART_SIZE", "greater"),
        ({"PRUNEKIT_STORAGE_URL": "s3://bucket", "PRUNEKIT_S3_ACCESS_KEY_ID": "only-the-id"},
         "PRUNEKIT_S3_SECRET_ACCESS_KEY", "both"),
    ]
    for env, variable, words in cases:
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            with pytest.raises(ValidationError) as err:
                Settings(data_dir=tmp_path)  # type: ignore[call-arg]
            line = settings_problem(err.value)
            assert line.startswith(f"{variable}:") and words in line and "\n" not in line, (env, line)
    with monkeypatch.context() as m:
        m.setenv("PRUNEKIT_STORAGE_URL", "s3://my-bucket/some/prefix/")
        assert Settings(data_dir=tmp_path).storage == ("my-bucket", "some/prefix/")  # type: ignore[call-arg]


def test_bad_storage_url_stops_worker_with_one_line(tmp_path: Path) -> None:
    secret = "very-secret-value-123"
    line = _one_line(_prunekit("worker", PRUNEKIT_BROKER_URL="redis://127.0.0.1:1/0",
                               PRUNEKIT_DATA_DIR=str(tmp_path / "data"), PRUNEKIT_STORAGE_URL="ftp://x",
                               PRUNEKIT_S3_SECRET_ACCESS_KEY=secret, PRUNEKIT_S3_ACCESS_KEY_ID="key-id"))
    assert "PRUNEKIT_STORAGE_URL:" in line and secret not in line, line
    assert not (tmp_path / "data").exists()


def test_a_message_about_an_upload_with_many_inputs_is_bounded(tmp_path: Path) -> None:
    """20,000 one-element inputs to a model that takes one: the capture error once listed each
    (2.6 MB for 100,000), stored with the job, logged and sent with every status read."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from crafted import honest_ts

    from prunekit import api
    from prunekit.errors import MAX_MESSAGE, CaptureFailed

    path = honest_ts(tmp_path / "m.ts")
    with pytest.raises(CaptureFailed) as err:
        api.prune(path, {"ratio": 0.5, "inputs": [{"shape": [1]}] * 20_000})
    text = str(err.value)
    assert len(text) <= MAX_MESSAGE and "inputs.0 [1] float32" in text and "19,992 more" in text


def test_every_engine_error_message_is_bounded() -> None:
    from prunekit.errors import MAX_MESSAGE, InvalidCalibration, InvalidModelFile

    for exc in (InvalidModelFile("x" * 10**6), InvalidCalibration("y" * 10**6, field="calibration.a")):
        assert len(str(exc)) <= MAX_MESSAGE and str(exc).endswith(" more characters)")


def test_a_spec_with_thousands_of_errors_lists_the_first_fifty() -> None:
    from prunekit.spec import MAX_DETAILS, parse_spec

    with pytest.raises(InvalidSpec) as err:
        parse_spec({"ratio": 0.5, "inputs": [{"shape": "x"}] * 20_000})
    details = err.value.details  # type: ignore[attr-defined]
    assert len(details) == MAX_DETAILS + 1 and details[-1]["message"] == "and 19,950 more errors"
    assert details[0]["path"] == "inputs.0.shape" and len(str(err.value)) <= 2000
