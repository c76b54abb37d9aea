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
    low: int = Field(0, description="Smallest value drawn for integer inputs.")
    high: int = Field(2, description="One past the largest value drawn for integer inputs.")

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
        return self


class ChannelRemoval(BaseModel):
    """Explicit removal of output channels (dim 0) of one parameter, and all coupled to them."""

    model_config = ConfigDict(extra="forbid")

    param: str = Field(min_length=1, description="Fully-qualified parameter name, e.g. layer1.0.conv1.weight")
    channels: list[int] = Field(min_length=1, description="Indices along dim 0 to remove.")

    @field_validator("channels")
    @classmethod
    def _non_negative(cls, channels: list[int]) -> list[int]:
        if any(c < 0 for c in channels):
            raise ValueError("channel indices must be non-negative")
        return sorted(set(channels))


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
    importance: Literal["l1", "l2", "bn_scale", "random"] = "l2"
    seed: int = Field(0, description="Seed for random importance and for the check's inputs.")
    ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of channels removed per group.")
    layers: dict[str, float] = Field(
        default_factory=dict, description="Per-parameter ratio of its output channels to remove."
    )
    channels: list[ChannelRemoval] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list, description="Parameters whose output channels are kept.")
    global_ranking: bool = False
    round_to: int = Field(1, ge=1, description="Kept channels per group are a multiple of this.")
    min_channels: int = Field(1, ge=1, description="Never keep fewer channels than this in a group.")
    output_format: Literal["same", "torchscript", "export", "state_dict"] = "same"
    tolerance: float = Field(1e-4, gt=0.0, le=1.0, description="Largest relative deviation the check accepts.")

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
        if self.ratio == 0.0 and not self.layers and not self.channels:
            raise ValueError("the spec prunes nothing: set ratio > 0, or give layers or channels")
        return self


def format_validation_error(err: ValidationError) -> list[dict]:
    """Turn pydantic's error list into ``[{"path": "inputs.0.shape", "message": ...}]``."""
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in e.get("loc", ())) or "(spec)"
        out.append({"path": path, "message": e.get("msg", "invalid")})
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
