"""``hf:``: Hugging Face transformers models, built from the ``config.json`` uploaded with the weights.

The configuration is an upload, so it is data to check, never a recipe to follow:

* the class is ``config.architectures[0]`` (or the name after ``hf:``), and it must be a model
  class transformers itself ships (one of its auto-mappings' classes, a ``PreTrainedModel``)
  whose configuration class is the one ``model_type`` names; anything else is refused;
* nothing that runs or fetches code is honoured: ``auto_map`` (custom modelling code),
  ``trust_remote_code`` and ``quantization_config`` (a quantizer imports its own backend) are
  refused wherever they appear; the attention implementation is always torch's (``sdpa``), never
  a kernel named by the file;
* the values become attributes of transformers' own configuration class (``from_dict``), which
  only stores them; the model is built once on the ``meta`` device first, and a configuration
  whose buffers would take more than :data:`MAX_BUFFER_BYTES` is refused before any memory is
  taken;
* ``use_cache`` is off: the pruned model computes outputs, not a generation cache.

The configuration as uploaded is what the manifest keeps (``Architecture.config``), so a pruned
state-dict is rebuilt by the same checks.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from functools import lru_cache
from types import ModuleType
from typing import Any

import torch

from ..errors import ArchitectureUnavailable, InvalidConfig
from ..registry import Architecture

MAX_BUFFER_BYTES = 1 << 30
REFUSED_KEYS = {
    "auto_map": "names custom modelling code, which is never run for uploads",
    "trust_remote_code": "asks to run code shipped with the checkpoint, which is never done",
    "quantization_config": "asks for a quantizer backend; upload the float checkpoint",
}
ATTENTION = "sdpa"
SEQUENCE_LENGTH = 16

_lock = threading.Lock()


def _transformers() -> ModuleType:
    with _lock:
        from . import PROVIDERS, installed

        if installed(PROVIDERS["torchvision"]):  # transformers imports torchvision when it is there
            from .torchvision_models import import_torchvision

            import_torchvision()
        try:
            return importlib.import_module("transformers")
        except Exception as exc:
            raise ArchitectureUnavailable(
                f"transformers is installed but cannot be imported: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None


@lru_cache(maxsize=1)
def _model_classes() -> frozenset[str]:
    """Every model class transformers maps a model type to (its auto-mappings), by name."""
    from transformers.models.auto import modeling_auto

    out: set[str] = set()
    for key, table in vars(modeling_auto).items():
        if not (key.startswith("MODEL_") and key.endswith("_MAPPING_NAMES") and isinstance(table, dict)):
            continue
        for value in table.values():
            for cls in (value if isinstance(value, (tuple, list)) else (value,)):
                if isinstance(cls, str):
                    out.add(cls)
    return frozenset(out)


def names() -> list[str]:
    _transformers()
    return sorted(_model_classes())


def note() -> str:
    t = _transformers()
    return f"transformers {t.__version__}: upload config.json with the weights (a folder, zip or tar)"


def _refuse_code(value: Any, path: str = "config.json") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in REFUSED_KEYS:
                raise InvalidConfig(REFUSED_KEYS[k], field=f"{path}.{k}")
            _refuse_code(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_code(v, f"{path}.{i}")


def class_name(config: dict, asked: str = "") -> str:
    """The model class a configuration names (``asked``, after ``hf:``, must agree with it)."""
    archs = config.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise InvalidConfig("must be a list of class names", field="config.json.architectures")
    if asked:
        if archs and asked not in archs:
            raise InvalidConfig(f"names {', '.join(archs)}, but the spec asks for hf:{asked}",
                                field="config.json.architectures")
        return asked
    if not archs:
        raise InvalidConfig("names no model class: add \"architectures\": [\"...ForCausalLM\"] (or name it in "
                            "spec.architecture as hf:CLASS)", field="config.json.architectures")
    if len(set(archs)) > 1:
        raise InvalidConfig(f"names several classes ({', '.join(archs)}): say which in spec.architecture as hf:CLASS",
                            field="config.json.architectures")
    return archs[0]


def _model_class(transformers: ModuleType, name: str) -> type:
    known = _model_classes()
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.7)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidConfig(f"{name!r} is not a model class transformers {transformers.__version__} ships "
                            f"(custom classes are never built for uploads){hint}", field="config.json.architectures")
    try:
        cls = getattr(transformers, name)
    except Exception as exc:
        raise ArchitectureUnavailable(f"transformers cannot import {name}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise InvalidConfig(f"{name!r} is not a transformers model class", field="config.json.architectures")
    return cls


def prepared_config(transformers: ModuleType, config: dict, cls: type):
    """transformers' configuration object for ``config``, validated as described above."""
    if not isinstance(config, dict):
        raise InvalidConfig("must be a JSON object")
    _refuse_code(config)
    model_type = config.get("model_type")
    mapping = transformers.CONFIG_MAPPING
    if not isinstance(model_type, str) or model_type not in mapping:
        raise InvalidConfig(f"model_type {model_type!r} is not one transformers {transformers.__version__} knows",
                            field="config.json.model_type")
    config_class = mapping[model_type]
    if not issubclass(config_class, cls.config_class) and not issubclass(cls.config_class, config_class):
        raise InvalidConfig(f"model_type {model_type!r} does not fit {cls.__name__} (which takes "
                            f"{cls.config_class.__name__})", field="config.json.model_type")
    # torch's attention, whatever the file names; float32 weights (the pipeline's), whatever it says
    data = {k: v for k, v in config.items() if "attn_implementation" not in k and k not in ("dtype", "torch_dtype")}
    try:
        obj = config_class.from_dict(data)
    except Exception as exc:
        raise InvalidConfig(f"transformers refuses it: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if hasattr(obj, "use_cache"):
        obj.use_cache = False
    obj._attn_implementation = ATTENTION
    return obj


def _check_size(cls: type, obj) -> None:
    """Build on ``meta`` (no memory) and refuse configurations whose buffers would be huge."""
    try:
        with torch.device("meta"):
            probe = cls(obj)
    except Exception as exc:
        raise InvalidConfig(f"{cls.__name__} cannot be built from it: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    buffers = sum(b.numel() * b.element_size() for b in probe.buffers())
    if buffers > MAX_BUFFER_BYTES:
        raise InvalidConfig(f"{cls.__name__} built from it would hold {buffers:,} bytes of buffers (more than "
                            f"{MAX_BUFFER_BYTES:,}); check max_position_embeddings and similar sizes")


def _example_inputs(cls: type, obj) -> list[dict]:
    main = getattr(cls, "main_input_name", "input_ids")
    if main == "input_ids" and isinstance(getattr(obj, "vocab_size", None), int):
        n = min(SEQUENCE_LENGTH, int(getattr(obj, "max_position_embeddings", SEQUENCE_LENGTH) or SEQUENCE_LENGTH))
        return [{"shape": [1, n], "dtype": "int64", "low": 0, "high": int(obj.vocab_size)}]
    if main == "pixel_values" and isinstance(getattr(obj, "image_size", None), int):
        c = int(getattr(obj, "num_channels", 3))
        return [{"shape": [1, c, obj.image_size, obj.image_size], "dtype": "float32"}]
    return []


def architecture(name: str, config: dict | None) -> Architecture:
    transformers = _transformers()
    if config is None:
        raise InvalidConfig(
            "hf: architectures are built from the config.json uploaded with the weights: upload the checkpoint "
            "folder (config.json + model.safetensors) as a zip or tar archive, or give the folder to the CLI",
            field="config.json",
        )
    if not isinstance(config, dict):
        raise InvalidConfig("must be a JSON object")
    _refuse_code(config)
    cls = _model_class(transformers, class_name(config, name))
    obj = prepared_config(transformers, config, cls)
    _check_size(cls, obj)

    def factory():
        return cls(prepared_config(transformers, config, cls))

    return Architecture(name=f"hf:{cls.__name__}", factory=factory, example_inputs=_example_inputs(cls, obj),
                        description=f"transformers.{cls.__name__} ({obj.model_type})", scriptable=False,
                        config=config)
