"""Example inputs: from the spec, the architecture's defaults, or a safetensors file.

Shapes are batch-first.  Capture uses a batch of 2 (a batch of 1 makes export specialise the batch
dimension); the check draws fresh random inputs at two batch sizes.  Dimensions other than the
batch that take any size (a sequence length: ``inputs[i].dims``, or a ``.pt2``'s own symbolic
sizes) carry a second size in ``vary``: the second batch the check draws is drawn at those sizes,
so every dynamic dimension is exercised at two sizes, and an output that lost one fails.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

import math

from ..errors import InvalidSpec, LimitExceeded
from ..limits import current as current_limits
from ..spec import DTYPES, InputSpec

_DTYPES = {name: getattr(torch, name) for name in DTYPES}  # "float32" → torch.float32, ...


@dataclass(frozen=True)
class InputSignature:
    """Shape (batch first), dtype and, for integers, the range of values to draw."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    low: int = 0
    high: int = 2
    vary: tuple[tuple[int, int], ...] = ()  # (dim, its second size) for each dynamic dim besides the batch

    def sample(self, batch: int, generator: torch.Generator, second: bool = False) -> torch.Tensor:
        shape = [batch, *self.shape[1:]]
        if second:
            for d, size in self.vary:
                shape[d] = size
        shape = tuple(shape)
        if self.dtype.is_floating_point:
            return torch.randn(shape, generator=generator).to(self.dtype)
        if self.dtype == torch.bool:
            return _padding_mask(shape, generator)
        return torch.randint(self.low, self.high, shape, generator=generator).to(self.dtype)


def _padding_mask(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Boolean inputs are nearly always masks, and random booleans blank out whole rows (every
    key masked gives NaN attention).  So each row is drawn as a padding mask: ``False`` for a
    leading run of at least one position, ``True`` after it (``nn.Transformer``'s convention,
    True = padding; a keep-mask reading still keeps the tail)."""
    if len(shape) < 2 or shape[-1] < 2:
        return torch.randint(0, 2, shape, generator=generator).bool()
    length = shape[-1]
    rows = torch.randint(1, length + 1, (*shape[:-1], 1), generator=generator)
    return torch.arange(length) >= rows


def check_example_size(shapes: "list[tuple[int, ...]]", *, as_value_error: bool = False) -> None:
    """Refuse example inputs whose elements (all inputs together, at the batch size given) pass
    ``PRUNEKIT_MAX_INPUT_ELEMENTS``: one such example drove a job to 19.5 GB before this limit."""
    limit = current_limits().max_input_elements
    total = sum(math.prod(s) for s in shapes)
    if total > limit:
        biggest = max(range(len(shapes)), key=lambda i: math.prod(shapes[i]))
        message = (f"the example inputs have {total:,} elements (inputs.{biggest}.shape {list(shapes[biggest])}), more "
                   f"than the limit of {limit:,} (PRUNEKIT_MAX_INPUT_ELEMENTS)")
        if as_value_error:
            raise ValueError(message)
        raise LimitExceeded(message)


def from_specs(specs: list[InputSpec] | list[dict]) -> list[InputSignature]:
    out = []
    for s in specs:
        s = s if isinstance(s, InputSpec) else InputSpec.model_validate(s)
        sig = InputSignature(tuple(s.shape), _DTYPES[s.dtype], s.low, s.high)
        out.append(with_spec_dims([sig], [s.dims])[0] if s.dims else sig)
    check_example_size([sig.shape for sig in out])
    return out


def from_safetensors(path: Path) -> list[InputSignature]:
    """Inputs in the file's key order, sorted naturally (input_0, input_1, ..., input_10)."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise InvalidSpec(f"the inputs file is not a readable safetensors file: {exc}") from None
    if not tensors:
        raise InvalidSpec("the inputs file holds no tensors")

    def natural(key: str) -> tuple:
        import re

        return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))

    sigs = []
    for key in sorted(tensors, key=natural):
        t = tensors[key]
        if t.dim() == 0:
            raise InvalidSpec(f"input {key!r} is a scalar; inputs need a batch dimension")
        low, high = 0, 2
        if not t.dtype.is_floating_point and t.dtype != torch.bool and t.numel():
            low, high = int(t.min()), int(t.max()) + 1
        sigs.append(InputSignature(tuple(t.shape), t.dtype, low, high))
    check_example_size([sig.shape for sig in sigs])
    return sigs


def sample_inputs(sigs: list[InputSignature], batch: int, seed: int, second: bool = False) -> tuple[torch.Tensor, ...]:
    """Inputs at ``batch``; ``second``: every dynamic dimension besides the batch at its second size."""
    g = torch.Generator().manual_seed(seed)
    return tuple(s.sample(batch, g, second) for s in sigs)


def second_size(size: int, lo: int = 1, hi: int | None = None) -> int | None:
    """Another size for a dynamic dimension of example size ``size`` within ``[lo, hi]``: one
    less (sequences have a maximum length more often than a minimum), else one more; never 1
    (export specialises size 1), ``None`` when the range holds no other."""
    for c in (size - 1, size + 1):
        if c >= max(lo, 2) and (hi is None or c <= hi):
            return c
    return None


def with_spec_dims(sigs: list[InputSignature], dims: list["list[int] | None"]) -> list[InputSignature]:
    """The signatures with the dimensions the spec names dynamic (``inputs[i].dims``) given a
    second size; dims of one example size share it (a sequence read by two inputs)."""
    out = []
    for sig, ds in zip(sigs, dims):
        vary = tuple((d, s2) for d in sorted(set(ds or ())) if d > 0 and (s2 := second_size(sig.shape[d])) is not None)
        out.append(replace(sig, vary=vary))
    return out + list(sigs[len(out):])


def dynamic_dims_text(sigs: list[InputSignature]) -> str:
    """``inputs.0 dim 1`` for every dynamic dimension besides the batch (for messages)."""
    return ", ".join(f"inputs.{i} dim {d}" for i, s in enumerate(sigs) for d, _ in s.vary)
