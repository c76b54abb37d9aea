"""``torchvision:NAME``: torchvision's model constructors, random weights.

torchvision is installed beside a CPU torch with ``pip install --no-deps``, and its compiled
extension (``torchvision/_C.so``: ``nms``, ``roi_align``, deformable convolution) is built for
the CUDA torch wheel, so on such a server it does not load.  ``import torchvision`` then fails in
``torchvision/_meta_registrations.py``, which registers shape functions *for those compiled ops*
and stops at the first one that does not exist.  The model definitions are pure Python, so
:func:`import_torchvision` imports torchvision normally and, only when that fails for exactly
this reason, imports it again with that one module replaced by an empty one: nothing is
registered for ops that do not exist, everything else is torchvision's own code.  The
consequence is stated, not hidden: models that call the compiled ops (detection: ``nms``,
``roi_align``) are refused by name with the reason, and ``prunekit architectures`` says so.

Quantization variants (``quantized_*``) are left out: they build the float model their name
stands for, which is offered under that name.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import threading
import types
from functools import lru_cache

from ..errors import ArchitectureUnavailable, UnknownArchitecture
from ..registry import Architecture

_lock = threading.Lock()
_compiled_ops: bool | None = None  # whether torchvision's compiled ops loaded (None: not imported yet)
_SKIPPED_MODULES = ("torchvision.models.quantization",)
_NEEDS_COMPILED_OPS = ("torchvision.models.detection",)


def _missing_compiled_op(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "torchvision::" in str(exc) and "does not exist" in str(exc)


def import_torchvision() -> types.ModuleType:
    """``torchvision``, imported as described above; sets :data:`_compiled_ops`."""
    global _compiled_ops
    with _lock:
        if "torchvision.models" in sys.modules and _compiled_ops is not None:
            return sys.modules["torchvision"]
        try:
            tv = importlib.import_module("torchvision")
            importlib.import_module("torchvision.models")
            from torchvision.extension import _has_ops

            _compiled_ops = bool(_has_ops())
            return tv
        except Exception as exc:
            if not _missing_compiled_op(exc):
                raise ArchitectureUnavailable(
                    f"torchvision is installed but cannot be imported: {type(exc).__name__}: {str(exc)[:200]}"
                ) from None
        # the compiled extension did not load: forget the half-imported package, skip the
        # registrations for its ops, import the (pure Python) rest
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        tv = importlib.import_module("torchvision")
        importlib.import_module("torchvision.models")
        _compiled_ops = False
        return tv


@lru_cache(maxsize=1)
def _builders() -> dict[str, str]:
    """name → module of its constructor, for every model offered."""
    tv = import_torchvision()
    out = {}
    for name in tv.models.list_models():
        module = tv.models.get_model_builder(name).__module__
        if not module.startswith(_SKIPPED_MODULES):
            out[name] = module
    return out


def names() -> list[str]:
    return sorted(_builders())


def note() -> str:
    import_torchvision()
    if _compiled_ops:
        return ""
    return "compiled ops not loaded here: detection models (nms, roi_align) are unavailable"


def _example_inputs(name: str) -> list[dict]:
    """The input the model's own preprocessing produces, where it says (crop size); none for
    detection and optical flow, whose inputs the spec must give."""
    tv = import_torchvision()
    try:
        default = tv.models.get_model_weights(name).DEFAULT
    except Exception:
        return []
    transform = getattr(default, "transforms", None)
    kind = getattr(getattr(transform, "func", transform), "__name__", "")
    crop = getattr(transform, "keywords", {}).get("crop_size")
    if isinstance(crop, (tuple, list)):
        h, w = int(crop[0]), int(crop[-1])
    elif isinstance(crop, int):
        h = w = crop
    else:
        h = w = 224
    if kind == "ImageClassification":
        return [{"shape": [1, 3, h, w], "dtype": "float32"}]
    if kind == "VideoClassification":
        return [{"shape": [1, 3, 16, h, w], "dtype": "float32"}]
    if kind == "SemanticSegmentation":
        return [{"shape": [1, 3, 224, 224], "dtype": "float32"}]
    return []


def architecture(name: str, config: dict | None) -> Architecture:
    from . import PROVIDERS, class_count_config

    classes = class_count_config(PROVIDERS["torchvision"], name, config)
    builders = _builders()
    if name not in builders:
        close = difflib.get_close_matches(name, list(builders), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join('torchvision:' + c for c in close)}?" if close else ""
        raise UnknownArchitecture(
            f"torchvision has no model {name!r}.{hint} ('prunekit architectures torchvision' lists all {len(builders)})"
        )
    if builders[name].startswith(_NEEDS_COMPILED_OPS) and not _compiled_ops:
        raise ArchitectureUnavailable(
            f"torchvision:{name} needs torchvision's compiled ops (nms, roi_align), which do not load on this "
            "server (a torchvision build matching its torch is needed)"
        )
    tv = import_torchvision()

    extra = {} if classes is None else {"num_classes": classes}

    def factory():
        return tv.models.get_model(name, weights=None, **extra)

    return Architecture(name=f"torchvision:{name}", factory=factory, example_inputs=_example_inputs(name),
                        description=f"torchvision.models.{name}" + (f" ({classes} classes)" if extra else ""),
                        scriptable=False, config=config)
