"""Importance criteria: how much a channel (or a single weight) matters, as a table of named criteria.

Every criterion is an :class:`Importance`: it scores channels (structured pruning), single weights
(unstructured), or both, and may *probe* the candidates the scores chose (GradProbe).  The
built-ins live in :data:`CRITERIA`; a user's own arrive through :func:`register` or the entry-point
group ``prunekit.importance`` (each entry an :class:`Importance` instance or a class), exactly the
way the built-ins are registered.  Adding a criterion is adding one entry.

A structured score is per channel (indexed by the channel's root atom) and is summed over every
tensor slice the channel would lose: its filter rows, biases, BatchNorm entries and the consumers'
input columns.  Criteria that read the calibration data (``needs_data``) get it through
:class:`RankInputs`: ``taylor`` and ``wanda`` score, ``gradprobe`` tests the candidates of a
data-free strategy (:mod:`.gradprobe`).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..analysis.walk import Analysis

if TYPE_CHECKING:
    import torch.fx as fx

    from ..data.calibration import Calibration
    from ..spec import Spec

ENTRY_POINTS = "prunekit.importance"
METHODS = ("structured", "unstructured")


@dataclass
class RankInputs:
    """Everything a criterion may look at.  ``gm`` and ``calibration`` are set when data was given."""

    analysis: Analysis | None
    tensors: dict[str, torch.Tensor]            # the captured graph's parameters and buffers
    spec: "Spec"
    roots: np.ndarray | None = None             # root atom of every atom (structured)
    groups: list = field(default_factory=list)  # the plan's groups (structured)
    gm: "fx.GraphModule | None" = None
    calibration: "Calibration | None" = None
    progress: Callable[[float, str], None] | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # what a criterion reports (``report.importance``)

    def tick(self, within: float, message: str) -> None:
        if self.progress is not None:
            self.progress(within, message)

    def channel_totals(self, values: dict[str, torch.Tensor], row_score: Callable[[torch.Tensor], torch.Tensor],
                       only: set[str] | None = None) -> np.ndarray:
        """Per channel, ``row_score`` of each of its slices of ``values`` (same names and shapes as the
        graph's tensors), summed."""
        return channel_scores(self.analysis, values, self.roots, row_score, only)


class Importance:
    """One criterion.  Override :meth:`channels` (structured) and/or :meth:`weights` (unstructured)."""

    name: str = ""
    methods: tuple[str, ...] = ("structured",)
    needs_data: bool = False
    description: str = ""

    def channels(self, inp: RankInputs) -> np.ndarray:
        """Importance of every channel, indexed by root atom (higher: keep)."""
        raise NotImplementedError

    def weights(self, inp: RankInputs, names: list[str]) -> dict[str, torch.Tensor]:
        """Importance of every element of the named weights, same shapes (higher: keep)."""
        raise NotImplementedError

    def probe_channels(self, inp: RankInputs, candidates: set[int]) -> set[int]:
        """Of the candidate channels the scores chose, those to remove (default: all of them)."""
        return candidates

    def probe_weights(self, inp: RankInputs, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Of the candidate weights (``True`` in ``masks``), those to zero (default: all of them)."""
        return masks


def _l1(rows: torch.Tensor) -> torch.Tensor:
    return rows.abs().sum(1)


def _l2(rows: torch.Tensor) -> torch.Tensor:
    return rows.pow(2).sum(1)


def _signed(rows: torch.Tensor) -> torch.Tensor:
    return rows.sum(1)


class Norm(Importance):
    """Weight norms: a channel's ``l1`` (or ``l2``) over every slice it would remove; a weight's ``|w|``."""

    def __init__(self, name: str, row_score, methods=("structured",), description: str = "") -> None:
        self.name, self.row_score, self.methods, self.description = name, row_score, methods, description

    def channels(self, inp: RankInputs) -> np.ndarray:
        return inp.channel_totals(inp.tensors, self.row_score)

    def weights(self, inp: RankInputs, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: inp.tensors[n].detach().abs().float() for n in names}


class BatchNormScale(Importance):
    """``|γ|`` of the channel's BatchNorm (Network Slimming); groups without one fall back to l2."""

    name = "bn_scale"
    description = "BatchNorm scale |gamma| (l2 where a group has no batch norm)"

    def channels(self, inp: RankInputs) -> np.ndarray:
        bn = batch_norm_weights(inp.analysis)
        l2 = inp.channel_totals(inp.tensors, _l2)
        if not bn:
            inp.warnings.append(f"importance {self.name}: the model has no batch norm; ranked by l2 instead")
            return l2
        scores = inp.channel_totals(inp.tensors, _l1, bn)
        out = l2.copy()
        for g in inp.groups:
            if any(n in bn for n, _ in g.slots):
                out[g.roots] = scores[g.roots]
        return out


class Random(Importance):
    name = "random"
    methods = ("structured", "unstructured")
    description = "seeded random ranking (a baseline)"

    def channels(self, inp: RankInputs) -> np.ndarray:
        return np.random.default_rng(inp.spec.seed).random(len(inp.roots))

    def weights(self, inp: RankInputs, names: list[str]) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(inp.spec.seed)
        return {n: torch.rand(inp.tensors[n].shape, generator=g) for n in names}


class Taylor(Importance):
    """First-order Taylor (Molchanov et al. 2019): per batch, ``|Σ w·∂L/∂w|`` over every parameter
    slice of the channel (the first-order change in loss when the whole channel is zeroed), averaged
    over the calibration batches.  A channel the data never activates scores zero, however large
    its weights."""

    name = "taylor"
    needs_data = True
    description = "first-order Taylor |sum of weight x gradient| over the channel's slices, per batch"

    def channels(self, inp: RankInputs) -> np.ndarray:
        from ..data.evidence import batch_gradients

        total = np.zeros(len(inp.roots))
        params = dict(inp.gm.named_parameters())
        count = 0
        for k, grads in enumerate(batch_gradients(inp.gm, inp.calibration)):
            prod = {n: params[n].detach() * g for n, g in grads.items()}
            total += np.abs(inp.channel_totals(prod, _signed))
            count += 1
            inp.tick((k + 1) / inp.calibration.num_batches, f"taylor: batch {k + 1}/{inp.calibration.num_batches}")
        return total / max(count, 1)


class Wanda(Importance):
    """WANDA (Sun et al. 2023): ``|w_ij| × ‖x_j‖₂``, the weight times the norm of the input feature it
    multiplies over the calibration data; compared within each output row."""

    name = "wanda"
    methods = ("unstructured",)
    needs_data = True
    description = "|weight| x input-activation norm, compared per output row"
    per_row = True

    def weights(self, inp: RankInputs, names: list[str]) -> dict[str, torch.Tensor]:
        from ..data.evidence import input_norms

        norms = input_norms(inp.gm, inp.calibration)
        out, fallback = {}, []
        for n in names:
            w = inp.tensors[n].detach().abs().float()
            x = norms.get(n)
            if x is None or w.dim() < 2 or x.numel() != w.shape[1]:
                out[n] = w
                fallback.append(n)
                continue
            out[n] = w * x.view(1, -1, *([1] * (w.dim() - 2)))
        if fallback:
            inp.warnings.append(f"importance wanda: no input activations for {len(fallback)} weight(s) "
                                f"({', '.join(fallback[:3])}{', ...' if len(fallback) > 3 else ''}); ranked by magnitude")
        return out


def batch_norm_weights(a: Analysis) -> set[str]:
    from ..analysis.arguments import bound

    out = set()
    for node in a.gm.graph.nodes:
        if node.op == "call_function" and "batch_norm" in str(node.target):
            try:
                w = bound(node).get("weight")
            except Exception:
                w = node.args[1] if len(node.args) > 1 else None
            if getattr(w, "op", None) == "get_attr":
                out.add(w.target)
    return out


# Elements scored at once: bounds the working copy (a slice copy and its square) whatever the
# tensor's size.  1 M elements: ResNet-18's rank transient +38-50 MB at 4 M, +11-21 MB at 1 M
# (a 512x512x3x3 weight read along its inputs fitted one 4 M chunk: 9.4 MB copied, 9.4 MB squared,
# then kept by the heap), in no more CPU time.
SCORE_CHUNK = 1 << 20


def score_dtype(t: torch.Tensor) -> torch.dtype:
    """Scores are computed in the weights' own dtype, half precisions widened to float32 (never
    float64: a copy of a 1 B-parameter model in float64 is 8.8 GB, and float32's pairwise sums
    rank the same channels on every test model)."""
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def slice_scores(t: torch.Tensor, dim: int, score: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """``score`` of every slice of ``t`` along ``dim`` (a row per index of ``dim``), in chunks of
    rows so no more than :data:`SCORE_CHUNK` elements are copied or widened at a time."""
    moved = t.movedim(dim, 0)
    n = moved.shape[0]
    per_row = max(1, moved[0].numel()) if n else 1
    step = max(1, SCORE_CHUNK // per_row)
    dtype = score_dtype(t)
    parts = [score(moved[i:i + step].reshape(min(step, n - i), -1).to(dtype)) for i in range(0, n, step)]
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(parts).to(torch.float64).numpy()


def channel_scores(a: Analysis, tensors: dict[str, torch.Tensor], roots: np.ndarray,
                   score: Callable[[torch.Tensor], torch.Tensor], only: set[str] | None = None) -> np.ndarray:
    """Importance of every component (indexed by root atom): ``score`` summed over its slices
    (each slice scored in :func:`score_dtype`, the sums across slices in float64)."""
    total = np.zeros(len(roots), dtype=np.float64)
    with torch.no_grad():
        for name, lab in a.attr_labels.items():
            t = tensors.get(name)
            if t is None or not t.is_floating_point() or (only is not None and name not in only):
                continue
            t = t.detach()
            for dim, arr in enumerate(lab):
                if arr is None or t.dim() == 0:
                    continue
                s = slice_scores(t, dim, score)
                ok = arr >= 0
                np.add.at(total, roots[arr[ok]], s[ok])
    return total


def _builtins() -> dict[str, Importance]:
    from .gradprobe import GradProbe

    table: list[Importance] = [
        Norm("l1", _l1, description="sum of |w| over the channel's slices"),
        Norm("l2", _l2, description="sum of w^2 over the channel's slices"),
        Norm("magnitude", _l1, methods=("unstructured",), description="|w|, compared within each layer"),
        BatchNormScale(),
        Random(),
        Taylor(),
        Wanda(),
        GradProbe(),
    ]
    return {c.name: c for c in table}


CRITERIA: dict[str, Importance] = {}
_loaded = False


def _load() -> dict[str, Importance]:
    global _loaded
    if not _loaded:
        _loaded = True
        for name, crit in _builtins().items():
            CRITERIA.setdefault(name, crit)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
            try:
                register(ep.load(), replace=False)
            except Exception:  # a broken plugin must not take the engine down; it is simply absent
                continue
    return CRITERIA


def register(criterion: "Importance | type[Importance]", *, replace: bool = False) -> Importance:
    """Add a criterion to the table (an instance or a class with a ``name``); returns it."""
    if isinstance(criterion, type):
        criterion = criterion()
    if not isinstance(criterion, Importance) or not criterion.name:
        raise TypeError("a criterion is an Importance (or subclass) with a name")
    _load()
    if criterion.name in CRITERIA and not replace:
        if CRITERIA[criterion.name] is criterion:
            return criterion
        raise ValueError(f"criterion {criterion.name!r} is already registered (pass replace=True)")
    bad = [m for m in criterion.methods if m not in METHODS]
    if bad:
        raise ValueError(f"criterion {criterion.name!r}: unknown method {bad[0]!r} (known: {', '.join(METHODS)})")
    CRITERIA[criterion.name] = criterion
    return criterion


def unregister(name: str) -> None:
    _load()
    CRITERIA.pop(name, None)


def criterion_names(method: str | None = None) -> list[str]:
    return sorted(n for n, c in _load().items() if method is None or method in c.methods)


def get_criterion(name: str) -> Importance:
    table = _load()
    if name not in table:
        raise KeyError(f"unknown criterion {name!r}")
    return table[name]


def rank_groups(inp: RankInputs) -> None:
    """Set ``importance`` on every group by the spec's criterion (warnings go to ``inp.warnings``)."""
    crit = get_criterion(inp.spec.importance)
    scores = np.asarray(crit.channels(inp), dtype=np.float64)
    if scores.shape != (len(inp.roots),):
        raise ValueError(f"criterion {crit.name!r} returned {scores.shape} scores for {len(inp.roots)} atoms")
    for g in inp.groups:
        g.importance = scores[g.roots]
