"""Names on the API side: what an accepted upload is called, and the download header that names a
file (the file names themselves follow :func:`prunekit.artifacts.download_name`)."""

from __future__ import annotations

from urllib.parse import quote

_EXTENSIONS = {"torchscript": ".pt", "export": ".pt2"}


def stored_model_name(fmt: str, container: str) -> str:
    """Name the stored upload by what it is, not by what the client called it."""
    if fmt == "state_dict":
        return "model.safetensors" if container == "safetensors" else "model.pt"
    if fmt == "checkpoint":
        return "model.zip" if container == "zip" else "model.tar"
    return "model" + _EXTENSIONS[fmt]


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name."""
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    if ascii_name == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
