"""``timm:NAME``: PyTorch Image Models' constructors, random weights.

``timm.create_model(name, pretrained=False)``: never a download, never a checkpoint path.  A
name may carry a pretrained tag (``convnext_atto.d2_in1k``); the tag only picks the default
input size.  timm imports torchvision, which is imported first the way the torchvision provider
does it (``torchvision_models.import_torchvision``).
"""

from __future__ import annotations

import difflib
import importlib
import threading
from functools import lru_cache
from types import ModuleType

from ..errors import ArchitectureUnavailable, UnknownArchitecture
from ..registry import Architecture

_lock = threading.Lock()


def _timm() -> ModuleType:
    with _lock:
        try:
            from .torchvision_models import import_torchvision

            import_torchvision()
        except ArchitectureUnavailable:
            raise
        except Exception:  # no torchvision: timm's own import says what is missing
            pass
        try:
            return importlib.import_module("timm")
        except Exception as exc:
            raise ArchitectureUnavailable(
                f"timm is installed but cannot be imported ({type(exc).__name__}: {str(exc)[:200]}); timm needs "
                "torchvision (pip install --no-deps torchvision)"
            ) from None


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    return tuple(_timm().list_models())


def names() -> list[str]:
    return list(_names())


def note() -> str:
    return ""


def _example_inputs(timm: ModuleType, name: str) -> list[dict]:
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        cfg = None
    size = tuple(getattr(cfg, "input_size", None) or (3, 224, 224))
    return [{"shape": [1, *[int(s) for s in size]], "dtype": "float32"}]


def architecture(name: str, config: dict | None) -> Architecture:
    from . import PROVIDERS, class_count_config

    classes = class_count_config(PROVIDERS["timm"], name, config)
    timm = _timm()
    base = name.partition(".")[0]
    if base not in set(_names()):
        close = difflib.get_close_matches(base, _names(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise UnknownArchitecture(f"timm has no model {name!r}.{hint} ('prunekit architectures timm' lists all)")

    extra = {} if classes is None else {"num_classes": classes}

    def factory():
        return timm.create_model(name, pretrained=False, **extra)

    return Architecture(name=f"timm:{name}", factory=factory, example_inputs=_example_inputs(timm, name),
                        description=f"timm.create_model({name!r})" + (f" ({classes} classes)" if extra else ""),
                        scriptable=False, config=config)
