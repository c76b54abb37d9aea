"""Read a model file into memory without running anything it contains.

Every zip archive is first checked against the unpacking limits, then:

* TorchScript: its sources are audited (``safety/ts_audit.py``: no op that reaches the file
  system), then ``torch.jit.load`` (TorchScript is compiled by torch's own compiler, never by
  Python), then every compiled graph is audited again;
* ``torch.export`` archives: every string torch would parse is checked against its grammar
  (``safety/pt2_audit.py``), then ``torch.export.load`` with every unpickle forced weights-only;
* state-dicts: ``torch.load(weights_only=True)`` (a pickle that asks for code is refused) or
  safetensors, then loaded into an architecture built from the registry by name;
* checkpoints (a folder, or a zip or tar of one: ``config.json`` + safetensors weights): the
  archive is unpacked by ``safety/archives.py``, the weights read by ``checkpoint.py``, the
  architecture built from the configuration (``hf:``, unless the spec names another).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import InvalidModelFile, InvalidSpec, StateDictMismatch, UnsafeModelFile, first_line
from .formats import ModelFormat, detect_format
from ..limits import Limits, current as current_limits
from ..registry import Architecture, get_architecture
from ..torch_compat import untrusted_unpickling
from . import checkpoint, empty, ties
from .safety import audit_export_archive, audit_torchscript_archive, audit_torchscript_module, check_zip


@dataclass
class LoadedModel:
    """A model file read into memory, ready to be captured as a graph."""

    format: ModelFormat
    size_bytes: int
    module: nn.Module | None = None  # eager module (state-dict uploads) or ScriptModule
    program: "torch.export.ExportedProgram | None" = None
    architecture: str | None = None
    param_names: set[str] = field(default_factory=set)
    config: dict | None = None  # the configuration the architecture was built from (checkpoints)


def _unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Accept the common wrappers ({"state_dict": ...}, {"model": ...}) around a state-dict."""
    for _ in range(2):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # type: ignore[return-value]
        if isinstance(obj, dict):
            for key in ("state_dict", "model_state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj  # type: ignore[return-value]
    raise InvalidModelFile("the file holds a pickle but not a state-dict (a mapping of names to tensors)")


_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def _asked_for(text: str) -> str:
    """``": it asks for posix.system"``, from torch's refusal: the name, never torch's advice
    (which suggests re-running with ``weights_only=False`` or allow-listing the global)."""
    m = _GLOBAL.search(text)
    return f": it asks for {m.group(1)}" if m else ""


def _without_torch_advice(text: str) -> str:
    """torch's message less its sentences about ``weights_only`` and allow-lists."""
    keep = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
            if not re.search(r"weights_only|safe_globals|trusted source|documentation of torch.load", s)]
    return " ".join(keep)[:300] or "unreadable pickle"


def read_state_dict(path: Path, container: str) -> dict[str, torch.Tensor]:
    if container == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, ValueError, OSError) as exc:
            raise InvalidModelFile(f"damaged safetensors file: {exc}") from None
    try:
        obj = empty.torch_load_mapped(path)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise UnsafeModelFile(
                "the pickle asks to import or call code, which is never done for uploads "
                f"(loaded with weights_only=True){_asked_for(text)}"
            ) from None
        raise InvalidModelFile(f"the pickle could not be read: {_without_torch_advice(text)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidModelFile(f"the state-dict file is damaged or truncated: {first}") from None
    return _unwrap_state_dict(obj)


def build_from_state_dict(architecture: "str | Architecture", state: dict[str, torch.Tensor],
                          config: dict | None = None) -> nn.Module:
    """Instantiate ``architecture`` (a name, or a resolved one) without random weights
    (``empty.py``) and load ``state`` strictly, explaining any mismatch; tied parameters stay tied."""
    arch = architecture if isinstance(architecture, Architecture) else get_architecture(architecture, config)
    architecture = arch.name
    module, empty_built = empty.build(arch.factory)
    groups = ties.alias_groups(module)
    state = ties.complete(state, groups, architecture)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"shape mismatches {len(wrong)} (e.g. {'; '.join(wrong[:3])})")
        raise StateDictMismatch(f"the state-dict does not fit architecture {architecture!r}: " + ", ".join(parts))
    empty.fill(module, state, empty_built)
    ties.retie(module, groups)
    if empty.has_meta(module):  # the constructor derived a buffer from a weight: build it normally
        module = arch.factory()
        module.load_state_dict(state, strict=True)
    return module.eval()


def _fitted(arch: Architecture, state: dict[str, torch.Tensor]) -> "tuple[Architecture, dict] | None":
    """A ``torchvision:``/``timm:`` architecture built for the number of classes the state-dict's
    classifier has (``providers.fitted_config``), or ``None``."""
    from ..providers import fitted_config

    module, _ = empty.build(arch.factory)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    config = fitted_config(arch.name, expected, {k: tuple(v.shape) for k, v in state.items()})
    return (get_architecture(arch.name, config), config) if config is not None else None


class _TorchLoadError(logging.Handler):
    """``torch.export.load`` logs the error that stopped it (with a traceback) and raises a
    generic one ("check the warnings above"): keep the logged error for the message, drop the log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.error = record.exc_info[1]

    @contextlib.contextmanager
    def catching(self):
        logger = logging.getLogger("torch.export")  # torch gives it its own stderr handler
        handlers, propagate = logger.handlers[:], logger.propagate
        logger.handlers, logger.propagate = [self], False
        try:
            yield self
        finally:
            logger.handlers, logger.propagate = handlers, propagate


def _refuse_pickle(*_args, **_kwargs):
    raise UnsafeModelFile("the export archive holds pickled objects, which are never unpickled for uploads")


def load_model(path: "str | Path", *, architecture: str | None = None, limits: Limits | None = None) -> LoadedModel:
    """Read the file at ``path``; state-dicts need ``architecture``."""
    path = Path(path)
    limits = limits or current_limits()
    fmt, container = detect_format(path)
    size = path.stat().st_size
    if container == "zip" and fmt == "state_dict":
        check_zip(path, limits)
    if fmt == "torchscript":
        audit_torchscript_archive(path, limits)
        try:
            ts = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError with long C++ traces
            raise InvalidModelFile(f"TorchScript archive could not be loaded: {first_line(exc)}") from None
        audit_torchscript_module(ts)
        ts.eval()
        names = {n for n, _ in ts.named_parameters()}
        return LoadedModel(fmt, size, module=ts, param_names=names)
    if fmt == "export":
        audit_export_archive(path, limits)
        logged = _TorchLoadError()
        try:
            # a file object: uploads keep no ".pt2" name, and torch warns about any other name
            with untrusted_unpickling(_refuse_pickle), logged.catching(), open(path, "rb") as f:
                ep = torch.export.load(f)
        except UnsafeModelFile:
            raise
        except pickle.UnpicklingError as exc:
            raise UnsafeModelFile(f"the export archive holds a pickle that asks to run code{_asked_for(str(exc))}") from None
        except Exception as exc:
            cause = logged.error if logged.error is not None else exc
            if isinstance(cause, UnsafeModelFile):
                raise cause from None
            raise InvalidModelFile(f"torch.export archive could not be loaded: {first_line(cause)}") from None
        names = set(ep.graph_signature.parameters)
        return LoadedModel(fmt, size, program=ep, param_names=names)
    config = None
    if fmt == "checkpoint":
        config, state = checkpoint.read(path, limits)
        architecture = architecture or "hf:"
        if not architecture.startswith("hf:"):
            config = None  # the spec names an architecture built without one: config.json is not read
    elif not architecture:
        raise InvalidSpec("a state-dict upload needs spec.architecture (the registered architecture name)")
    else:
        state = read_state_dict(path, container)
    arch = get_architecture(architecture, config)
    try:
        module = build_from_state_dict(arch, state)
    except StateDictMismatch:
        fitted = _fitted(arch, state) if config is None else None
        if fitted is None:
            raise
        arch, config = fitted
        module = build_from_state_dict(arch, state)
    names = {n for n, _ in module.named_parameters()}
    size = size if container != "folder" else sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return LoadedModel(fmt, size, module=module, architecture=arch.name, param_names=names, config=config)

