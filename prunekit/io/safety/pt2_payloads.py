"""Check what a ``.pt2``'s weights and constants declare against the bytes the archive holds.

``torch.export.load`` builds each weight from two things the uploader wrote: a stored record
(``data/weights/weight_0``) and a line of ``*_weights_config.json`` saying which dtype, sizes,
strides and offset to view it with.  Nothing ties the two together: an empty record makes torch
allocate and zero a tensor of the declared size (``[10**8, 8]`` is 3.2 GB from a 2 KB upload),
and a zero stride views a 128-byte record as ``[10**12, 8]``, which every later pass then
computes on.  The worker's memory limit turns the first into a failed job with an unhelpful
message; the CLI and the library have no such limit.

So before torch opens the file, every non-pickled payload of the weights and constants configs
is checked here: integer sizes, strides and offset, a rank torch supports, a view that lies
inside its record, and the bytes all views declare (an empty record's zeros included) within the
limit on what an archive may inflate to (``PRUNEKIT_MAX_ARCHIVE_RATIO`` times the archive's size,
at most ``PRUNEKIT_MAX_UNPACKED_BYTES``).  An honest archive stores each tensor's whole storage,
so its views never declare more than it holds.  Pickled payloads are left to
:func:`prunekit.torch_compat.untrusted_unpickling` (weights-only, or refused).
"""

from __future__ import annotations

import json
import math
import re
import zipfile

from ...errors import InvalidModelFile, LimitExceeded, UnsafeModelFile
from ...limits import Limits
from .zip_limits import read_member

# Element size of each dtype code of torch.export's serialization schema (ScalarType).
_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2,
             28: 2, 29: 1, 30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8}
MAX_RANK = 64
_MAX_INT = (1 << 63) - 1
_SMALL = 1 << 20  # below this, declared views may exceed the archive's size as they like
_RECORD = re.compile(r"[\w.\-]{1,255}")
_CONFIGS = re.compile(r"(?:.*/)?data/(weights|constants)/[\w.\-]+_(weights|constants)_config\.json")


def _ints(items: object, what: str, where: str) -> list[int]:
    if not isinstance(items, list) or len(items) > MAX_RANK:
        raise UnsafeModelFile(f"{where}: {what} is not a list of at most {MAX_RANK} sizes")
    return [_int(x, what, where) for x in items]


def _int(item: object, what: str, where: str) -> int:
    v = item.get("as_int") if isinstance(item, dict) and set(item) == {"as_int"} else None
    if type(v) is not int or not 0 <= v <= _MAX_INT:
        raise UnsafeModelFile(f"{where}: {what} holds {str(item)[:60]}, not a non-negative integer")
    return v


def check_pt2_payloads(zf: zipfile.ZipFile, infos: "list[zipfile.ZipInfo]", archive_bytes: int, limits: Limits) -> None:
    """Raise ``UnsafeModelFile`` / ``LimitExceeded`` unless every stored tensor's view fits its
    record and all of them together fit the archive's inflation limit."""
    sizes = {i.filename: i.file_size for i in infos if not i.is_dir()}
    budget = min(limits.max_unpacked_bytes, max(limits.max_archive_ratio * archive_bytes, _SMALL))
    declared = 0
    for info in infos:
        m = _CONFIGS.fullmatch(info.filename)
        if not m:
            continue
        folder = info.filename[: info.filename.rindex("/") + 1]
        member = info.filename.split("/", 1)[-1] if "/" in info.filename else info.filename
        try:
            doc = json.loads(read_member(zf, info, limits.max_unpacked_bytes))
        except (ValueError, RecursionError):
            raise InvalidModelFile(f"the export archive's {member} is not valid JSON") from None
        config = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(config, dict):
            raise InvalidModelFile(f"the export archive's {member} has no config mapping")
        for fqn, payload in config.items():
            where = f"the export archive's {member} entry {str(fqn)[:80]!r}"
            if not isinstance(payload, dict) or not isinstance(payload.get("path_name"), str):
                raise InvalidModelFile(f"{where} names no stored record")
            record = payload["path_name"]
            if not _RECORD.fullmatch(record) or folder + record not in sizes:
                raise UnsafeModelFile(f"{where} names {record[:80]!r}, which is not a record of the archive")
            if payload.get("use_pickle") or m.group(1) == "constants" and not record.startswith("tensor_"):
                continue  # pickles: weights-only or refused at load (torch_compat.untrusted_unpickling)
            meta = payload.get("tensor_meta")
            if not isinstance(meta, dict):
                raise InvalidModelFile(f"{where} has no tensor_meta")
            itemsize = _ITEMSIZE.get(meta.get("dtype"))  # type: ignore[arg-type]
            if itemsize is None:
                raise UnsafeModelFile(f"{where} has dtype {str(meta.get('dtype'))[:20]}, which is not a tensor dtype")
            shape = _ints(meta.get("sizes"), "sizes", where)
            strides = _ints(meta.get("strides"), "strides", where)
            offset = _int(meta.get("storage_offset"), "storage_offset", where)
            if len(strides) != len(shape):
                raise UnsafeModelFile(f"{where} has {len(shape)} sizes but {len(strides)} strides")
            numel = math.prod(shape)
            nbytes = sizes[folder + record]
            if numel and nbytes:
                last = offset + sum((s - 1) * st for s, st in zip(shape, strides))
                if (last + 1) * itemsize > nbytes:
                    raise UnsafeModelFile(
                        f"{where} declares a {list(shape)} view (strides {list(strides)}, offset {offset}) that "
                        f"reaches past its {nbytes:,}-byte record")
            declared += numel * itemsize
            if declared > budget:
                raise LimitExceeded(
                    f"{where} declares a {list(shape)} tensor: the archive's tensors would take more than "
                    f"{budget:,} bytes from a {archive_bytes:,}-byte file (PRUNEKIT_MAX_ARCHIVE_RATIO, "
                    "PRUNEKIT_MAX_UNPACKED_BYTES)")
