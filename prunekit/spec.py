"""The pruning spec: what to prune, how to rank, what to write.

The field names are the public contract shared by the Python API, the CLI and the HTTP service.
Unknown fields are rejected (``extra="forbid"``) so that a typo such as ``"ratios"`` fails loudly
instead of silently pruning nothing.  Validation errors carry the path of the bad field
(``inputs.0.shape``), which the service returns with its 422.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidSpec

# The dtypes an example input may have, by their torch names (``torch.float32`` ...): the one list
# the spec validates against and :mod:`prunekit.io.inputs` maps to torch dtypes.
DType = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "bool"]
DTYPES: tuple[str, ...] = get_args(DType)


class InputSpec(BaseModel):
    """One example input: its shape (batch first) and dtype.

    Integer inputs (token ids for an embedding) are drawn uniformly from ``[low, high)``.
    """

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=1, description="Shape with the batch dimension first.")
    dtype: DType = "float32"
    # torch draws integers as int64: a bound outside it overflows inside torch.randint
    low: int = Field(0, ge=-(2**63), lt=2**63, description="Smallest value drawn for integer inputs.")
    high: int = Field(2, ge=-(2**63), lt=2**63, description="One past the largest value drawn for integer inputs.")
    dims: list[int] | None = Field(
        None, description="Dimensions that take any size (default [0], the batch; e.g. [0, 1] for a sequence "
        "length). A .pt2 says this itself; for TorchScript and state-dict uploads nothing else can.")

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: list[int]) -> list[int]:
        if any(s < 1 for s in shape):
            raise ValueError("every dimension must be at least 1")
        if len(shape) > 8:
            raise ValueError("at most 8 dimensions")
        return shape

    @model_validator(mode="after")
    def _range(self) -> "InputSpec":
        if self.high <= self.low:
            raise ValueError("high must be greater than low")
        if self.dims is not None:
            bad = [d for d in self.dims if not 0 <= d < len(self.shape)]
            if bad or len(set(self.dims)) != len(self.dims):
                raise ValueError(f"dims must be distinct dimensions of the shape (0 to {len(self.shape) - 1}), got {self.dims}")
        return self


class ChannelRemoval(BaseModel):
    """Explicit removal of channels of one parameter: its output channels (dim 0) and everything
    coupled to them, or (``dim: in``) the input channels of that one consumer only."""

    model_config = ConfigDict(extra="forbid")

    param: str = Field(min_length=1, description="Fully-qualified parameter name, e.g. layer1.0.conv1.weight")
    channels: list[int] = Field(min_length=1, description="Indices along the chosen dimension to remove.")
    dim: Literal["out", "in"] = Field(
        "out", description="out: output channels (dim 0) with everything coupled to them; in: input channels "
        "(dim 1) of this consumer only, the producer keeps serving its other readers.")

    @field_validator("channels")
    @classmethod
    def _non_negative(cls, channels: list[int]) -> list[int]:
        if any(c < 0 for c in channels):
            raise ValueError("channel indices must be non-negative")
        return sorted(set(channels))


class Target(BaseModel):
    """Prune by global ranking until the model keeps at most this fraction of its MACs or params."""

    model_config = ConfigDict(extra="forbid")

    macs: float | None = Field(None, gt=0.0, lt=1.0, description="Fraction of the original MACs to keep at most.")
    params: float | None = Field(None, gt=0.0, lt=1.0, description="Fraction of the original parameters to keep at most.")

    @model_validator(mode="after")
    def _one(self) -> "Target":
        if (self.macs is None) == (self.params is None):
            raise ValueError("give exactly one of macs or params")
        return self

    @property
    def metric(self) -> str:
        return "macs" if self.macs is not None else "params"

    @property
    def fraction(self) -> float:
        return float(self.macs if self.macs is not None else self.params)  # type: ignore[arg-type]


SWEEPABLE = ("gradient_threshold", "ratio", "sparsity")


class Sweep(BaseModel):
    """One parameter and its settings; every setting is pruned and evaluated on the held-out data."""

    model_config = ConfigDict(extra="forbid")

    gradient_threshold: list[float] | None = Field(None, min_length=1, max_length=32)
    ratio: list[float] | None = Field(None, min_length=1, max_length=32)
    sparsity: list[float] | None = Field(None, min_length=1, max_length=32)
    select: float | None = Field(
        None, description="The setting whose model the job returns (default: the sparsest within max_accuracy_drop)."
    )
    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0, description="Largest top-1 drop (absolute) select accepts.")

    @model_validator(mode="after")
    def _one(self) -> "Sweep":
        given = [f for f in SWEEPABLE if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SWEEPABLE)}")
        values = self.values
        if len(set(values)) != len(values):
            raise ValueError(f"{given[0]}: settings repeat")
        for v in values:
            if given[0] == "gradient_threshold" and v < 0:
                raise ValueError("gradient_threshold: settings must be >= 0")
            if given[0] != "gradient_threshold" and not 0.0 < v < 1.0:
                raise ValueError(f"{given[0]}: settings must be in (0, 1)")
        if self.select is not None and self.select not in values:
            raise ValueError(f"select: {self.select} is not one of the settings of {given[0]}")
        return self

    @property
    def parameter(self) -> str:
        return next(f for f in SWEEPABLE if getattr(self, f) is not None)

    @property
    def values(self) -> list[float]:
        return list(getattr(self, self.parameter))


class Spec(BaseModel):
    """A pruning request.  ``ratio`` defaults to 0: then only ``layers``/``channels`` prune."""

    model_config = ConfigDict(extra="forbid")

    architecture: str | None = Field(
        None, description="Registered architecture name; required for state-dict uploads only."
    )
    inputs: list[InputSpec] = Field(
        default_factory=list,
        description="Example inputs (batch first). Required unless an inputs file is given.",
    )
    method: Literal["structured", "unstructured"] = Field(
        "structured", description="structured: remove whole channels; unstructured: zero single weights (dense shapes)."
    )
    importance: str = Field(
        "l2",
        description="Criterion (prunekit.prune.importance): structured l1|l2|bn_scale|random|taylor|gradprobe, "
        "unstructured magnitude|wanda|gradprobe; more through the prunekit.importance entry points. "
        "taylor, gradprobe and wanda need calibration data.",
    )
    seed: int = Field(0, ge=-(2**63), lt=2**63,  # an int64: torch overflows past it
                      description="Seed for random importance and for the check's inputs.")
    ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of channels removed per group.")
    layers: dict[str, float] = Field(
        default_factory=dict, description="Per-parameter ratio of its output channels to remove."
    )
    channels: list[ChannelRemoval] = Field(default_factory=list)
    reorder_inputs: bool = Field(
        True, description="dim 'in': reorder the channels of the streams those consumers read so that the most "
        "subselections are free narrows instead of gathers.")
    constrained: bool = Field(
        False, description="dim 'in': instead of subselecting, remove those channels from their producer and every "
        "reader (seed 003's constrained mode); the report says what the removal grew by.")
    pruned_inputs: list[tuple[str, int]] = Field(
        default_factory=list, description="Seed 003's form of input-channel removal: [[param, input channel], ...]; "
        "the same as channels entries with dim 'in'.")
    ignore: list[str] = Field(default_factory=list, description="Parameters whose output channels are kept.")
    from_zeros: bool = Field(
        False, description="Also remove every channel whose producing weights (rows, bias, BatchNorm scale and shift) "
        "are exactly zero, as a model masked by torch.nn.utils.prune leaves them; proven to leave the output unchanged.")
    normalized_dims: Literal["keep", "prune"] = Field(
        "keep", description="keep: channels a LayerNorm/RMSNorm/GroupNorm (or a mean/variance) takes statistics over "
        "stay (the pruned model computes exactly the masked original). prune: they may go too (a transformer's or "
        "ConvNeXt's residual width); the statistics are then over the kept channels, so the model computes "
        "something else by design: the check compares with that reference and the report says how much the output "
        "changed.")
    global_ranking: bool = False
    round_to: int = Field(1, ge=1, description="Kept channels per group are a multiple of this.")
    min_channels: int = Field(1, ge=1, description="Never keep fewer channels than this in a group.")
    output_format: Literal["same", "torchscript", "export", "state_dict", "checkpoint"] = Field(
        "same", description="same (the upload's), torchscript, export (.pt2), state_dict (state_dict.pt + manifest.json) "
        "or checkpoint (model.safetensors + manifest.json, and config.json for hf: architectures).")
    tolerance: float = Field(1e-4, gt=0.0, le=1.0, description="Largest relative deviation the check accepts.")
    target: "Target | None" = Field(
        None, description="Prune until the model has at most this fraction of its MACs or parameters (global ranking)."
    )
    sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="unstructured: fraction of each layer's weights zeroed.")
    pattern: str | None = Field(None, description="unstructured: at most N non-zeros in every M consecutive weights, e.g. '2:4'.")
    # calibration data (a .safetensors upload with inputs and optional targets)
    loss: Literal["cross_entropy", "mse", "none"] | None = Field(
        None, description="Loss on the calibration data; default: cross_entropy for integer targets, mse for float "
        "targets, none without targets.",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Calibration batch size.")
    num_batches: int | None = Field(
        None, ge=1, le=10000, description="Calibration batches used for gradients and statistics (default: all that fit)."
    )
    holdout: float = Field(0.2, ge=0.0, lt=1.0, description="Fraction of the calibration samples kept aside for evaluation.")
    reduction_factor: float = Field(0.1, gt=0.0, lt=1.0, description="gradprobe: the factor candidates are scaled by.")
    gradient_threshold: float = Field(
        0.0, ge=0.0, description="gradprobe: relative gradient growth a candidate may show and still be pruned."
    )
    recalibrate_bn: bool = Field(False, description="Re-estimate BatchNorm statistics on the calibration inputs after removal.")
    sweep: "Sweep | None" = Field(None, description="Evaluate several settings on the held-out data and keep one.")

    @field_validator("importance")
    @classmethod
    def _known_criterion(cls, name: str) -> str:
        from .prune.importance import criterion_names

        if name not in criterion_names():
            raise ValueError(f"unknown criterion {name!r}; known: {', '.join(criterion_names())}")
        return name

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        n, sep, m = pattern.partition(":")
        if not (sep and n.isdigit() and m.isdigit() and 0 < int(n) < int(m) <= 64):
            raise ValueError("pattern must be N:M with 0 < N < M <= 64, e.g. '2:4'")
        return pattern

    @field_validator("inputs")
    @classmethod
    def _bounded(cls, inputs: list[InputSpec]) -> list[InputSpec]:
        from .io.inputs import check_example_size

        check_example_size([tuple(i.shape) for i in inputs], as_value_error=True)
        return inputs

    @field_validator("layers")
    @classmethod
    def _layer_ratios(cls, layers: dict[str, float]) -> dict[str, float]:
        for name, r in layers.items():
            if not 0.0 < r < 1.0:
                raise ValueError(f"ratio for {name!r} must be in (0, 1), got {r}")
        return layers

    @model_validator(mode="after")
    def _something_to_do(self) -> "Spec":
        from .prune.importance import criterion_names

        named_inputs = bool(self.pruned_inputs)
        if self.pruned_inputs:  # one representation from here on
            by_param: dict[str, list[int]] = {}
            for param, channel in self.pruned_inputs:
                if channel < 0:
                    raise ValueError(f"pruned_inputs: channel indices must be non-negative (got {channel} for {param!r})")
                by_param.setdefault(param, []).append(channel)
            self.channels = self.channels + [ChannelRemoval(param=p, channels=c, dim="in") for p, c in by_param.items()]
            self.pruned_inputs = []

        swept = self.sweep.parameter if self.sweep is not None else None
        if self.method == "unstructured":
            if self.importance == "l2":  # the structured default: the unstructured one is magnitude
                self.importance = "magnitude"
            if self.importance not in criterion_names("unstructured"):
                raise ValueError(f"importance {self.importance!r} is a structured criterion; method unstructured takes "
                                 f"{', '.join(criterion_names('unstructured'))}")
            stray = [f for f in ("layers", "channels", "target", "from_zeros") if getattr(self, f)] + (["ratio"] if self.ratio else [])
            if named_inputs:
                stray = ["pruned_inputs" if f == "channels" else f for f in stray]
            if stray:
                raise ValueError(f"{', '.join(stray)}: structured fields; method unstructured prunes by sparsity")
            if self.sparsity == 0.0 and self.pattern is None and swept != "sparsity":
                raise ValueError("the spec prunes nothing: set sparsity > 0 or a pattern")
            if swept == "ratio":
                raise ValueError("sweep.ratio: method unstructured sweeps sparsity or gradient_threshold")
            if self.pattern is not None:
                n, m = (int(v) for v in self.pattern.split(":"))
                if self.sparsity and abs(self.sparsity - (1 - n / m)) > 1e-9:
                    raise ValueError(f"sparsity {self.sparsity} contradicts pattern {self.pattern} "
                                     f"(which zeros {1 - n / m:g}); give one of them")
                if self.importance == "gradprobe":
                    raise ValueError("pattern: gradprobe restores single weights and would break the N:M pattern")
                if swept == "sparsity":
                    raise ValueError("sweep.sparsity: a pattern fixes the sparsity")
            return self
        if self.importance not in criterion_names("structured"):
            raise ValueError(f"importance {self.importance!r} is an unstructured criterion; use it with "
                             f"method 'unstructured' (structured: {', '.join(criterion_names('structured'))})")
        if self.sparsity or self.pattern:
            raise ValueError("sparsity, pattern: unstructured fields; set method 'unstructured'")
        if swept == "sparsity":
            raise ValueError("sweep.sparsity: method structured sweeps ratio or gradient_threshold")
        if self.target is not None and (self.ratio or self.layers or self.channels):
            raise ValueError("target: give either a target or ratio/layers/channels, not both")
        if (self.ratio == 0.0 and not self.layers and not self.channels and self.target is None and swept != "ratio"
                and not self.from_zeros):
            raise ValueError("the spec prunes nothing: set ratio > 0 or a target, or give layers, channels or from_zeros")
        return self

    @property
    def output_channels(self) -> list[ChannelRemoval]:
        return [c for c in self.channels if c.dim == "out"]

    @property
    def input_channels(self) -> list[ChannelRemoval]:
        return [c for c in self.channels if c.dim == "in"]

    @property
    def needs_data(self) -> list[str]:
        """The fields that need calibration data (empty: the spec prunes without)."""
        from .prune.importance import get_criterion

        need = [f"importance {self.importance!r}"] if get_criterion(self.importance).needs_data else []
        if self.recalibrate_bn:
            need.append("recalibrate_bn")
        if self.sweep is not None:
            need.append("sweep")
        return need


MAX_DETAILS = 50


def format_validation_error(err: ValidationError) -> list[dict]:
    """Turn pydantic's error list into ``[{"path": "inputs.0.shape", "message": ...}]``: the first
    ``MAX_DETAILS``, then one entry counting the rest (a 1 MiB spec of bad inputs has 80,000)."""
    out = []
    errors = err.errors()
    for e in errors[:MAX_DETAILS]:
        path = ".".join(str(p) for p in e.get("loc", ())) or "(spec)"
        out.append({"path": path[:200], "message": str(e.get("msg", "invalid"))[:300]})
    if len(errors) > MAX_DETAILS:
        out.append({"path": "(spec)", "message": f"and {len(errors) - MAX_DETAILS:,} more errors"})
    return out


def parse_spec(raw: "Spec | dict | str | bytes | Path") -> Spec:
    """Accept a Spec, a dict, JSON text/bytes or a path to a JSON file; raise InvalidSpec."""
    if isinstance(raw, Spec):
        return raw
    if isinstance(raw, Path):
        raw = raw.read_text()
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidSpec(f"spec is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:  # [[[[...: Python's parser recurses once per level
            raise InvalidSpec("spec is not valid JSON: it is nested too deeply") from None
        except ValueError as exc:  # an integer of more than 4,300 digits (Python's own limit)
            raise InvalidSpec(f"spec is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise InvalidSpec("spec must be a JSON object")
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        details = format_validation_error(exc)
        text = "; ".join(f"{d['path']}: {d['message']}" for d in details)
        err = InvalidSpec(f"invalid spec: {text}")
        err.details = details  # type: ignore[attr-defined]
        raise err from None
