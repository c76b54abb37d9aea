"""Standard architectures and checkpoint folders through the real service (API, Celery worker,
private Redis): torchvision:resnet50 and timm:convnext_atto state-dicts, Hugging Face LLaMA and
BERT checkpoints as archives; what the server refuses at the door, and what it hands back
rebuilds through the same provider."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
import torch

import prunekit
from helpers import hf_checkpoint
from svc_helpers import KEY_A, FaultStack, start_fault_stack, submit, wait_job

pytestmark = pytest.mark.timeout(900)

SMALL = [{"shape": [1, 3, 64, 64], "dtype": "float32"}]


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """A stack of its own (private Redis): standard models are larger than the shared stack's
    4 MiB upload limit."""
    stack = start_fault_stack(tmp_path_factory.mktemp("named"))  # uploads up to 256 MiB
    try:
        yield stack
    finally:
        stack.close()


def _hf(tmp: Path, kind: str) -> Path:
    return hf_checkpoint(tmp, kind)


def _download(c, job_id: str, dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for a in c.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]:
        resp = c.get(a["url"])
        assert resp.status_code == 200
        (dest / a["name"]).write_bytes(resp.content)
        out[a["name"]] = dest / a["name"]
    return out


@pytest.mark.parametrize("name, ratio", [("torchvision:resnet50", 0.3), ("timm:convnext_atto", 0.5)])
def test_a_state_dict_by_name_is_pruned_and_rebuilds_by_that_name(big_stack, tmp_path, name, ratio):
    torch.manual_seed(0)
    weights = tmp_path / "weights.pt"
    torch.save(prunekit.registry.build(name).state_dict(), weights)
    c = big_stack.client(KEY_A)
    r = submit(c, weights, {"architecture": name, "ratio": ratio, "inputs": SMALL})
    assert r.status_code == 202, r.text
    done, _ = wait_job(c, r.json()["id"], timeout=600)
    assert done["status"] == "succeeded", done
    assert done["result"]["output_format"] == "state_dict" and done["result"]["check"]["passed"]
    files = _download(c, done["id"], tmp_path / "out")
    model = prunekit.load_pruned(name, files["state_dict.pt"], files["manifest.json"])
    assert sum(p.numel() for p in model.parameters()) == done["result"]["params"]["after"]
    assert done["result"]["params"]["after"] < 0.9 * done["result"]["params"]["before"]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


def test_a_llama_checkpoint_folder_through_the_client(big_stack, tmp_path):
    src = _hf(tmp_path, "llama")
    with prunekit.Client(big_stack.url, api_key=KEY_A) as client:
        job = client.submit(src, {"ratio": 0.5})  # the folder goes as a zip of its checkpoint files
        assert job["input"]["format"] == "checkpoint"
        done = client.wait(job["id"], timeout=600)
        assert done["status"] == "succeeded", done
        assert done["result"]["output_format"] == "checkpoint"
        client.download_all(job["id"], tmp_path / "pruned")
    assert {"model.safetensors", "config.json", "manifest.json", "report.json"} <= {
        p.name for p in (tmp_path / "pruned").iterdir()}
    model = prunekit.load_pruned(tmp_path / "pruned")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(p.numel() for p in model.parameters()) == done["result"]["params"]["after"]
    with torch.no_grad():
        assert model(torch.randint(0, 100, (2, 16))).logits.shape == (2, 16, 100)


def test_a_sharded_bert_tar_gz_to_a_pt2(big_stack, tmp_path):
    src = _hf(tmp_path, "bert")
    archive = tmp_path / "bert.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="bert")
    c = big_stack.client(KEY_A)
    r = submit(c, archive, {"ratio": 0.5, "output_format": "export"})
    assert r.status_code == 202, r.text
    done, _ = wait_job(c, r.json()["id"], timeout=600)
    assert done["status"] == "succeeded", done
    files = _download(c, done["id"], tmp_path / "out")
    ep = torch.export.load(str(files["model.pt2"]))
    with torch.no_grad():
        out = ep.module()(torch.randint(0, 100, (3, 16)))
    logits = out["logits"] if isinstance(out, dict) else getattr(out, "logits", out[0] if isinstance(out, tuple) else out)
    assert logits.shape == (3, 16, 100)


def _checkpoint_zip(tmp_path: Path, config: dict, extra: list[tuple[str, bytes]] = ()) -> Path:
    src = _hf(tmp_path, "llama")
    path = tmp_path / "ckpt.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("llama/config.json", json.dumps(config))
        zf.write(src / "model.safetensors", "llama/model.safetensors")
        for name, data in extra:
            zf.writestr(name, data)
    return path


def test_the_door_refuses_code_unsafe_archives_and_unknown_names(big_stack, tmp_path):
    c = big_stack.client(KEY_A)
    cfg = json.loads((_hf(tmp_path / "a", "llama") / "config.json").read_text())
    evil = dict(cfg, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    r = submit(c, _checkpoint_zip(tmp_path / "b", evil), {"ratio": 0.5})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_config" and err["details"][0]["path"] == "config.json.auto_map"

    custom = dict(cfg, architectures=["MyOwnForCausalLM"])
    r = submit(c, _checkpoint_zip(tmp_path / "c", custom), {"ratio": 0.5})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_config", r.text

    slip = _checkpoint_zip(tmp_path / "d", cfg, [("../../evil.safetensors", b"x")])
    r = submit(c, slip, {"ratio": 0.5})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsafe_model_file", r.text
    assert not list(big_stack.data_dir.rglob("evil*"))

    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2)}, weights)
    r = submit(c, weights, {"architecture": "torchvision:resnet5", "ratio": 0.5, "inputs": SMALL})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "unknown_architecture" and "torchvision:resnet50" in r.json()["error"]["message"]


def test_a_tar_with_a_link_fails_the_job_with_the_reason(big_stack, tmp_path):
    src = _hf(tmp_path, "llama")
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(src / "config.json", arcname="config.json")
        link = tarfile.TarInfo("model.safetensors")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        tf.addfile(tarfile.TarInfo("pad"), io.BytesIO(b""))
    c = big_stack.client(KEY_A)
    r = submit(c, archive, {"ratio": 0.5})
    assert r.status_code == 202, r.text  # a tar is looked into by the job, not at the door
    done, _ = wait_job(c, r.json()["id"], timeout=300)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "unsafe_model_file" and "not a regular file" in done["error"]["message"]


def test_the_cli_submits_a_checkpoint_folder_and_downloads_a_folder(big_stack, tmp_path):
    import subprocess
    import sys

    src = _hf(tmp_path, "bert")
    out = tmp_path / "bert-pruned"
    proc = subprocess.run([sys.executable, "-m", "prunekit.cli", "submit", str(src), "--spec",
                           json.dumps({"ratio": 0.5, "normalized_dims": "prune"}), "--wait", "-o", str(out),
                           "--server", big_stack.url, "--api-key", KEY_A],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert {"model.safetensors", "config.json", "manifest.json", "report.json"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text())
    assert report["normalized_dims"]["function_changed"] and report["check"]["passed"]
    model = prunekit.load_pruned(out)
    assert model.bert.embeddings.word_embeddings.weight.shape[1] < 64  # the residual width went
    with torch.no_grad():
        assert model(torch.randint(0, 100, (2, 16))).logits.shape == (2, 16, 100)
