"""Request text that Python's parsers choke on: each is a 4xx naming the field, never a 500.

``json.loads`` recurses once per level of nesting (``[[[[...`` raises ``RecursionError``, even at
a depth of 1,000 in a worker thread) and refuses integers of more than 4,300 digits with a plain
``ValueError``; ``int()`` refuses the same, and ``str.isdigit()`` accepts digits ``int()`` does not
(``'²'``).  Each of these reached the API's error handler as an unexpected exception.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest

from prunekit.errors import InvalidModelFile, InvalidSpec
from prunekit.io.checkpoint import read_json
from prunekit.io.formats import safetensors_header
from prunekit.spec import parse_spec

from crafted import SPEC, honest_ts

DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 5_000 + "1" + "}" * 5_000


def _safetensors(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize("text", [DEEP_LIST, "[" * 1_000 + "]" * 1_000, DEEP_OBJECT,
                                  '{"seed": ' + "9" * 5_000 + "}"])
def test_spec_text_python_cannot_parse_is_a_spec_error(text: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec(text)
    assert "spec is not valid JSON" in str(err.value)


def test_config_json_nested_too_deeply_is_a_model_file_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(DEEP_OBJECT)
    with pytest.raises(InvalidModelFile) as err:
        read_json(tmp_path / "config.json", "config.json")
    assert "nested too deeply" in str(err.value)


@pytest.mark.parametrize("header", ["{" + DEEP_OBJECT[1:], '{"\udcff": 1}', "[1]"])
def test_safetensors_header_that_is_no_json_object_is_a_model_file_error(header: str) -> None:
    raw = header.encode("utf-8", errors="surrogateescape")
    with pytest.raises(InvalidModelFile):
        safetensors_header(io.BytesIO(_safetensors(raw)))


@pytest.fixture
def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", events_max_seconds=2))  # type: ignore[arg-type]
    with TestClient(app, client=("127.0.0.1", 5555), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_the_api_answers_unparseable_text_with_4xx(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = honest_ts(tmp_path / "small.pt").read_bytes()
    for spec in (DEEP_LIST, DEEP_OBJECT, '{"ratio": 0.5, "seed": ' + "9" * 5_000 + "}"):
        r = client.post("/v1/jobs", files={"model": ("m.pt", model)}, data={"spec": spec})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_spec", r.text[:300]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("ck/config.json", DEEP_OBJECT)
        zf.writestr("ck/model.safetensors", _safetensors(b"{}"))
    r = client.post("/v1/jobs", files={"model": ("ck.zip", zipped.getvalue())},
                    data={"spec": json.dumps({"ratio": 0.5, "inputs": [{"shape": [1, 4]}]})})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_model_file", r.text[:300]
    assert "nested too deeply" in r.json()["error"]["message"]

    job = client.post("/v1/jobs", files={"model": ("m.pt", model)}, data={"spec": json.dumps(SPEC)}).json()
    for last_id in ("9" * 5_000, "\u00b2", " 12 "):  # too long for int(); a digit int() refuses; padded
        with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id.encode("latin-1")}) as resp:
            assert resp.status_code == 200, last_id[:20]
            first = next(resp.iter_lines())
            assert first.startswith(("retry:", "id:", "event:", "data:", ":")), first
