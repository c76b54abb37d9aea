"""Checkpoint folders: ``config.json`` + safetensors weights, as Hugging Face writes them.

A folder (given to the CLI or the Python API) or an archive of one (``safety/archives.py``
unpacks it first, into a folder of ours) holds:

* ``config.json``: the architecture's configuration (``providers/transformers_models.py``
  validates it; here it is only read as bounded JSON);
* ``model.safetensors``, or ``model.safetensors.index.json`` whose ``weight_map`` sends every
  tensor to one shard file in the same folder.  Shard names are plain file names (no folders),
  every shard exists, every tensor is in the shard the index says and in no other.

Tied weights are stored once (``save_pretrained`` drops the duplicates); the loader fills them in
from the architecture (``ties.py``).  Other files (tokenizer, generation config, README) are not
read.  Pickled weights (``pytorch_model.bin``) are refused with the way out: safetensors.

A pruned checkpoint is written the same way (:func:`write`): ``model.safetensors`` with the pruned
tensors, ``config.json`` as uploaded, and ``manifest.json`` with every pruned shape.  The config
cannot say that layer 3 kept 40 channels and layer 4 kept 52, so the folder loads with
``prunekit.load_pruned(folder)``, not with ``from_pretrained``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import InvalidModelFile
from ..limits import Limits
from .safety.archives import unpack_checkpoint, zip_config

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_JSON_BYTES = 16 << 20


@dataclass
class Checkpoint:
    folder: Path
    config: dict
    shards: list[Path]
    index: dict[str, str] = field(default_factory=dict)  # tensor -> shard file name (sharded only)


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InvalidModelFile(f"the checkpoint has no {what}")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InvalidModelFile(f"{what} is larger than {MAX_JSON_BYTES:,} bytes")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelFile(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # Python's parser recurses once per level of nesting
        raise InvalidModelFile(f"{what} is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidModelFile(f"{what} is not a JSON object")
    return data


def _shard_name(name: object) -> str:
    if (not isinstance(name, str) or not name.endswith(".safetensors") or "/" in name or "\\" in name
            or name in (".", "..") or "\x00" in name or len(name) > 255):
        raise InvalidModelFile(f"{INDEX}: {name!r} is not a shard file name in the same folder")
    return name


def open_folder(folder: "str | Path") -> Checkpoint:
    """Read the folder's ``config.json`` and find its weights; nothing is loaded yet."""
    folder = Path(folder)
    config = read_json(folder / CONFIG, CONFIG)
    if (folder / INDEX).exists():
        index = read_json(folder / INDEX, INDEX)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InvalidModelFile(f"{INDEX} has no weight_map")
        mapping = {str(k): _shard_name(v) for k, v in weight_map.items()}
        names = sorted(set(mapping.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise InvalidModelFile(f"{INDEX} names shards the checkpoint does not hold: {', '.join(missing[:3])}")
        return Checkpoint(folder, config, [folder / n for n in names], mapping)
    if (folder / WEIGHTS).is_file():
        return Checkpoint(folder, config, [folder / WEIGHTS])
    pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
    why = (f" ({', '.join(sorted(pickled)[:3])} are pickles, which are not read: save with safetensors, "
           "e.g. save_pretrained(..., safe_serialization=True))" if pickled else "")
    raise InvalidModelFile(f"the checkpoint has config.json but no {WEIGHTS} or {INDEX}{why}")


def load_state(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of every shard, checked against the index."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for shard in ckpt.shards:
        try:
            part = load_file(str(shard))
        except (SafetensorError, ValueError, OSError) as exc:
            raise InvalidModelFile(f"damaged safetensors file {shard.name}: {exc}") from None
        for k, t in part.items():
            if k in state:
                raise InvalidModelFile(f"tensor {k!r} is stored in more than one shard")
            if ckpt.index and ckpt.index.get(k) != shard.name:
                raise InvalidModelFile(f"tensor {k!r} is in {shard.name}, but {INDEX} says "
                                       f"{ckpt.index.get(k, 'nothing about it')}")
            state[k] = t
    absent = [k for k in ckpt.index if k not in state]
    if absent:
        raise InvalidModelFile(f"{INDEX} lists tensors no shard holds: {', '.join(absent[:3])}")
    return state


def peek_config(path: "str | Path | BinaryIO", container: str, limits: Limits) -> dict | None:
    """The ``config.json`` of a checkpoint upload, read without loading any weights: a folder's
    file, or a zip's member (``archives.zip_config``; the zip may be a seekable binary file).
    ``None`` for a tar, which is read only by the job itself (a compressed tar cannot be looked
    into without inflating it)."""
    if container == "folder":
        return read_json(Path(path) / CONFIG, CONFIG)  # type: ignore[arg-type]
    if container != "zip":
        return None
    raw = zip_config(path, limits, MAX_JSON_BYTES)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelFile(f"{CONFIG} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidModelFile(f"{CONFIG} is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidModelFile(f"{CONFIG} is not a JSON object")
    return data


def read(path: "str | Path", limits: Limits) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config, tensors)`` of a checkpoint folder or archive (an archive is unpacked into a
    temporary folder of ours, removed before this returns)."""
    path = Path(path)
    if path.is_dir():
        ckpt = open_folder(path)
        return ckpt.config, load_state(ckpt)
    with tempfile.TemporaryDirectory(prefix="prunekit-checkpoint-") as tmp:
        ckpt = open_folder(unpack_checkpoint(path, Path(tmp) / "checkpoint", limits))
        return ckpt.config, load_state(ckpt)
