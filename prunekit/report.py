"""The prune report: what changed, what was checked, where the time went."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerChange:
    name: str
    shape_before: list[int]
    shape_after: list[int]


@dataclass
class PruneReport:
    input_format: str
    output_format: str
    architecture: str | None = None
    method: str = "structured"
    importance: str = "l2"
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    file_size_before: int = 0
    file_size_after: int = 0
    dynamic_batch: bool = True
    channels_before: int = 0
    channels_removed: int = 0
    groups_found: int = 0
    groups_pruned: int = 0
    layers: list[LayerChange] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    barriers: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)  # weights whose output channels all stay, and why
    check: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)  # the data used (empty: none given)
    evaluation: dict[str, Any] | None = None   # loss/accuracy of original and pruned on the held-out part
    sparsity: dict[str, Any] | None = None     # unstructured: the sparsity reached, per layer and overall
    target: dict[str, Any] | None = None       # target macs/params: requested and reached
    importance_details: dict[str, Any] | None = None  # what a criterion reports (gradprobe: candidates, restored)
    batch_norm: dict[str, Any] | None = None   # recalibrate_bn: what was re-estimated
    sweep: dict[str, Any] | None = None        # one row per setting, and the one selected
    inputs: dict[str, Any] | None = None       # channels with dim "in": each consumer's subselection (narrow or gather)
    from_zeros: dict[str, Any] | None = None   # channels found with only zero weights: removed, and groups kept
    normalized_dims: dict[str, Any] | None = None  # "prune": ops whose statistics now run over fewer channels, output change
    attention: list[dict] | None = None        # per attention: heads, key/value heads and head width, before and after

    @property
    def param_reduction(self) -> float:
        return 100.0 * (1 - self.params_after / self.params_before) if self.params_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["param_reduction_percent"] = round(self.param_reduction, 3)
        d["macs_reduction_percent"] = (
            round(100.0 * (1 - self.macs_after / self.macs_before), 3) if self.macs_before > 0 else None
        )
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
