"""Errors the engine raises on purpose.

Every failure a user can cause (a bad file, a bad spec, a model we cannot capture, a prune that
does not check out) is a :class:`PruneKitError` with a stable machine-readable ``code`` and a
message meant for a person.  The worker stores both in the job record and the service returns
them as they are, so nothing here may contain a stack trace.
"""

from __future__ import annotations


MAX_MESSAGE = 2000


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out.  Messages name parts
    of an upload (its inputs, names, shapes), and an upload can have 100,000 of them: a message
    listing each (2.6 MB) would be stored with the job, logged, and sent on every status read."""
    if len(text) <= limit:
        return text
    tail = f" ... ({len(text) - (limit - 40):,} more characters)"
    return text[: limit - 40] + tail


class PruneKitError(Exception):
    """Base class: ``code`` is stable and machine-readable, ``str(err)`` is for people."""

    code = "prune_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(bounded(message))
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class InvalidModelFile(PruneKitError):
    """The uploaded bytes are not a model file we can read (empty, truncated, unknown)."""

    code = "invalid_model_file"


class UnsafeModelFile(PruneKitError):
    """The file asks for something to be run or parsed as code: a pickle that imports code, a
    ``.pt2`` string outside the grammar torch's parsers are allowed to see, a TorchScript op
    that reaches outside the tensor world (see ``prunekit/safety/``)."""

    code = "unsafe_model_file"


class UnknownArchitecture(PruneKitError):
    """A state-dict upload names an architecture that is not registered."""

    code = "unknown_architecture"


class ArchitectureUnavailable(UnknownArchitecture):
    """The architecture's provider needs a package this server does not have (``torchvision:``
    without torchvision), or the package cannot build it here; the message says what to install."""

    code = "architecture_unavailable"


class StateDictMismatch(PruneKitError):
    """The state-dict does not fit the named architecture."""

    code = "state_dict_mismatch"


class InvalidSpec(PruneKitError):
    """The spec is malformed or does not fit the model (unknown parameter, nothing to prune)."""

    code = "invalid_spec"


class InvalidCalibration(InvalidSpec):
    """The calibration data does not fit the model or the spec (shapes, dtypes, too few samples,
    targets out of range).  ``details`` names the field, as a spec error does."""

    code = "invalid_calibration"

    def __init__(self, message: str, *, field: str = "calibration") -> None:
        super().__init__(f"{field}: {message}")
        self.details = [{"path": field, "message": message}]


class InvalidConfig(InvalidSpec):
    """A configuration uploaded with the weights (a Hugging Face ``config.json``) is refused: not
    valid data for its class, names code or a class the library does not ship, or asks for
    downloads.  ``details`` names the field."""

    code = "invalid_config"

    def __init__(self, message: str, *, field: str = "config.json") -> None:
        super().__init__(f"{field}: {message}")
        self.details = [{"path": field, "message": message}]


class InvalidRule(PruneKitError, TypeError):
    """An extra channel rule (``prune(..., rules=...)``) is not one: its key is not an op or its
    value not a :class:`prunekit.Rule`.  Also a ``TypeError``, since it is a programming error."""

    code = "invalid_rule"


class CaptureFailed(PruneKitError):
    """The model could not be captured as one graph (torch.export or TS2EP refused it)."""

    code = "capture_failed"


class CheckFailed(PruneKitError):
    """The pruned model does not match the masked original: the prune is rejected."""

    code = "check_failed"


class ExportFailed(PruneKitError):
    """The pruned model could not be written in the requested format."""

    code = "export_failed"


class OutputLarger(ExportFailed):
    """The written model would be larger than its upload (unique parameters, or file size in the
    upload's format): it is never handed out."""

    code = "output_larger"


class InputSizesLost(ExportFailed):
    """The written model does not take every input size its upload takes (a dynamic dimension
    was fixed): it is never handed out."""

    code = "input_sizes_lost"


class LimitExceeded(PruneKitError):
    """The work would exceed a resource limit (``prunekit/limits.py``); the message names it."""

    code = "limit_exceeded"


class MemoryLimit(PruneKitError):
    """The job ran out of the memory its process may use (``PRUNEKIT_JOB_MEMORY_LIMIT``)."""

    code = "memory_limit"


_OOM_MARKS = ("can't allocate memory", "DefaultCPUAllocator: not enough memory", "std::bad_alloc", "Cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is an allocation that failed: Python's ``MemoryError``
    or torch's allocator refusing, which the engine may have wrapped as its own error."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or any(m in str(e) for m in _OOM_MARKS):
            return True
        e = e.__cause__ or e.__context__
    return False


def first_line(exc: BaseException, *, with_type: bool = False, limit: int = 300) -> str:
    """The first non-empty line of an exception's text: torch's errors carry long C++ traces
    that must never reach a user."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = (lines[0] if lines else type(exc).__name__)
    if line.startswith("The following operation failed in the TorchScript interpreter") and len(lines) > 1:
        line = lines[-1]  # the interpreter's own error comes last, after the TorchScript traceback
    line = line[:limit]
    return f"{type(exc).__name__}: {line}" if with_type else line
