"""Files on the API side: placing accepted uploads, naming and locating artifacts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

from prunekit.artifacts import MODEL_FORMATS
from worker.layout import Layout

from .uploads import ReceivedFile

_EXTENSIONS = {"torchscript": ".pt", "export": ".pt2"}


def stored_model_name(fmt: str, container: str) -> str:
    """Name the stored upload by what it is, not by what the client called it."""
    if fmt == "state_dict":
        return "model.safetensors" if container == "safetensors" else "model.pt"
    if fmt == "checkpoint":
        return "model.zip" if container == "zip" else "model.tar"
    return "model" + _EXTENSIONS[fmt]


def place_upload(layout: Layout, job_id: str, received: ReceivedFile, name: str) -> Path:
    """Move an upload out of ``.incoming`` into the job's folder (same file system: a rename)."""
    target_dir = layout.upload_dir(job_id)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / name
    os.replace(received.path, target)
    return target


def original_stem(filename: str | None) -> str:
    """The upload's name without extension, made safe for a Content-Disposition header."""
    stem = Path(filename or "model").name
    for suffix in (".safetensors", ".pt2", ".pth", ".pt", ".bin", ".zip", ".ckpt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"[\x00-\x1f\x7f/\\\"]", "_", stem).strip() or "model"
    return stem[:200]


def download_filename(upload_filename: str | None, artifact: str) -> str:
    """``resnet.pt`` + ``model.pt`` → ``resnet-pruned.pt``; other artifacts keep their role:
    ``resnet-pruned-manifest.json``, ``resnet-pruned-report.json``."""
    stem = original_stem(upload_filename) + "-pruned"
    if artifact in MODEL_FORMATS:
        return stem + Path(artifact).suffix
    return f"{stem}-{artifact}"


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name."""
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    if ascii_name == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
