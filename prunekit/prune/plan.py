"""Group the removable channels, rank them (``importance.py``), and choose which to remove.

A *channel* is one connected component of atoms.  Channels that touch exactly the same tensor
dimensions (``conv1.weight`` dim 0, ``bn1.weight`` dim 0, ``conv2.weight`` dim 1, ...) form a
*group*; ratios apply per group, like "remove 30% of this layer's filters".  Importance of a channel
is summed over every weight slice it would remove.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..analysis.walk import Analysis
from ..errors import InvalidSpec
from ..spec import Spec
from .importance import RankInputs, get_criterion, rank_groups

Slot = tuple[str, int]  # (tensor attribute, dimension)


@dataclass
class Group:
    slots: tuple[Slot, ...]
    roots: np.ndarray                # one root atom per channel, in index order of the leader
    output: bool                     # reaches the model's output
    importance: np.ndarray | None = None
    remove: np.ndarray | None = None  # roots chosen for removal

    @property
    def leader(self) -> str:
        for name, dim in self.slots:
            if dim == 0:
                return name
        return self.slots[0][0]

    def to_dict(self) -> dict:
        return {
            "leader": self.leader,
            "channels": int(len(self.roots)),
            "removed": int(0 if self.remove is None else len(self.remove)),
            "reaches_output": self.output,
            "tensors": [f"{n}:{d}" for n, d in self.slots],
        }


@dataclass
class Plan:
    groups: list[Group]
    removed: set[int]                  # roots of removed channels
    pinned_reasons: dict[str, str] = field(default_factory=dict)  # weight -> why its output channels stay
    warnings: list[str] = field(default_factory=list)


def find_groups(a: Analysis, tensors: dict[str, torch.Tensor]) -> tuple[list[Group], np.ndarray]:
    """Return the prunable groups and the root of every atom.

    A component's *slots* are the tensor dimensions its atoms occupy; components with the same
    slots form a group, ordered by where each first appears.  Done on arrays: a model has ~10^5
    components.  Each component's slot set is identified by two 64-bit sums of random keys, one
    per slot (a collision between two different sets has probability ~2^-128 per pair).
    """
    roots = a.atoms.roots()
    slots: list[Slot] = []
    r_parts, s_parts, i_parts = [], [], []
    for name, lab in a.attr_labels.items():
        if name not in tensors:
            continue
        for dim, arr in enumerate(lab):
            if arr is None:
                continue
            where = np.nonzero(arr >= 0)[0]
            if where.size:
                r_parts.append(roots[arr[where]])
                s_parts.append(np.full(where.size, len(slots), dtype=np.int64))
                i_parts.append(where)
                slots.append((name, dim))
    if not slots:
        return [], roots
    r, s, idx = np.concatenate(r_parts), np.concatenate(s_parts), np.concatenate(i_parts)
    by_r = np.argsort(r, kind="stable")
    new = np.ones(len(r), dtype=bool)
    new[1:] = r[by_r][1:] != r[by_r][:-1]
    comps, first = r[by_r][new], by_r[new]                # each component, and where it first appears
    pair = np.sort(r * len(slots) + s)
    pair = pair[np.concatenate(([True], pair[1:] != pair[:-1]))]  # each (component, slot) once
    pr, ps = pair // len(slots), pair % len(slots)
    keys = np.random.default_rng(0).integers(0, 2**63, size=(2, len(slots)), dtype=np.int64).view(np.uint64)
    starts = np.searchsorted(pr, comps)
    h1 = np.add.reduceat(keys[0][ps], starts)             # wraps modulo 2^64, as intended
    h2 = np.add.reduceat(keys[1][ps], starts)
    keep = ~np.isin(comps, np.fromiter(a.atoms.hard, dtype=np.int64, count=len(a.atoms.hard)))
    comps, first, h1, h2, starts = comps[keep], first[keep], h1[keep], h2[keep], starts[keep]
    if not comps.size:  # every channel pinned (a barrier over the whole model): no group, each kept with its reason
        return [], roots
    order = np.lexsort((first, idx[first]))               # by first index, then first appearance
    comps, first, h1, h2, starts = comps[order], first[order], h1[order], h2[order], starts[order]
    _, label = np.unique(np.stack([h1, h2], axis=1), axis=0, return_inverse=True)
    label = label.reshape(-1)
    outputs = np.fromiter(a.atoms.output, dtype=np.int64, count=len(a.atoms.output))
    groups = []
    by_label = np.argsort(label, kind="stable")          # members keep their order within a group
    for members in np.split(by_label, np.nonzero(np.diff(label[by_label]))[0] + 1):
        st = starts[members[0]]
        end = st + np.searchsorted(pr[st:], pr[st], side="right")
        sig = tuple(sorted(slots[int(k)] for k in ps[st:end]))
        rs = comps[members]
        groups.append(Group(slots=sig, roots=rs.astype(np.int64), output=bool(np.isin(rs, outputs).any())))
    groups.sort(key=lambda g: (g.leader, g.slots))
    return groups, roots


def known_names(tensors: dict[str, torch.Tensor], names: list[str], field_name: str) -> None:
    for n in names:
        if n not in tensors:
            close = difflib.get_close_matches(n, list(tensors), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidSpec(f"{field_name}: parameter {n!r} is not in the model{hint}")


def _keep_count(n: int, ratio: float, spec: Spec) -> int:
    keep = n - int(math.floor(ratio * n + 1e-9))
    keep = max(keep, min(spec.min_channels, n))
    if spec.round_to > 1:
        keep = min(n, int(math.ceil(keep / spec.round_to) * spec.round_to))
    return keep


def plan(a: Analysis, tensors: dict[str, torch.Tensor], spec: Spec, *, inp: RankInputs | None = None,
         target_search=None, also_remove: set[int] | None = None) -> Plan:
    """Choose the channels to remove, following ``spec``.

    ``inp`` carries the calibration data for data-driven criteria (and collects their details);
    ``target_search(groups, pool)`` chooses the removed channels for a ``target`` spec;
    ``also_remove`` are channel roots chosen before the plan (``from_zeros``, constrained input
    channels), removed as well.
    """
    known_names(tensors, list(spec.layers), "layers")
    known_names(tensors, list(spec.ignore), "ignore")
    known_names(tensors, [c.param for c in spec.channels], "channels")  # both dims: names are names
    groups, roots = find_groups(a, tensors)
    if inp is None:
        inp = RankInputs(analysis=a, tensors=tensors, spec=spec)
    inp.analysis, inp.tensors, inp.spec, inp.roots, inp.groups = a, tensors, spec, roots, groups
    if inp.details.get("_ranked_for") != spec.importance or "_scores" not in inp.details:
        rank_groups(inp)
        inp.details.update(_ranked_for=spec.importance, _scores=[g.importance for g in groups])
    else:  # a sweep re-plans the same groups: the scores do not change
        for g, imp in zip(groups, inp.details["_scores"]):
            g.importance = imp
    warnings = inp.warnings

    def groups_with(name: str) -> list[Group]:
        return [g for g in groups if (name, 0) in g.slots]

    def why_pinned(name: str, dim: int = 0) -> str:
        lab = a.attr_labels.get(name)
        if lab is None or len(lab) <= dim or lab[dim] is None:
            return "it has a single output channel"
        for atom in lab[dim][lab[dim] >= 0][:1].tolist():
            r = roots[atom]
            return a.atoms.hard.get(r, "it reaches the model output")
        return "no prunable channels"

    ignored = set(spec.ignore)
    removed: set[int] = set()
    per_group_ratio: dict[int, float] = {}
    for gi, g in enumerate(groups):
        if any((n, 0) in g.slots for n in ignored):
            continue
        named = [spec.layers[n] for n, d in g.slots if d == 0 and n in spec.layers]
        if named:
            per_group_ratio[gi] = max(named)
        elif (spec.ratio > 0 or spec.target is not None) and not g.output:
            per_group_ratio[gi] = spec.ratio
    for name in spec.layers:
        if not groups_with(name):
            raise InvalidSpec(f"layers: the output channels of {name!r} cannot be pruned: {why_pinned(name)}")

    probe = get_criterion(spec.importance).probe_channels
    if spec.target is not None:
        if target_search is None:
            raise InvalidSpec("target: this entry point cannot search for a target")
        survivors, rounds = target_search.probed(groups, sorted(per_group_ratio), lambda c: probe(inp, c))
        removed.update(survivors)
        if "gradprobe" in inp.details:  # the totals over every round, not the last round's
            inp.details["gradprobe"].update(candidates=rounds["candidates"], restored=rounds["restored"],
                                            pruned=len(survivors), rounds=rounds["rounds"])
    else:
        if spec.global_ranking and spec.ratio > 0:
            pool = [gi for gi, r in per_group_ratio.items() if not any(n in spec.layers for n, d in groups[gi].slots if d == 0)]
            explicit = [gi for gi in per_group_ratio if gi not in pool]
            _choose_global(groups, pool, spec, removed)
            for gi in explicit:
                _choose_local(groups[gi], per_group_ratio[gi], spec, removed)
        else:
            for gi, r in per_group_ratio.items():
                _choose_local(groups[gi], r, spec, removed)
        if removed:  # GradProbe tests the ranked candidates (never the channels named below)
            removed = set(probe(inp, removed))
    removed |= also_remove or set()
    root_group = {int(r): g for g in groups for r in g.roots.tolist()}
    for entry in spec.output_channels:  # input channels were subselected before the analysis
        if entry.param in ignored:
            raise InvalidSpec(f"channels: {entry.param!r} is also listed in ignore")
        lab = a.attr_labels[entry.param]
        n0 = tensors[entry.param].shape[0] if tensors[entry.param].dim() else 0
        bad = [c for c in entry.channels if c >= n0]
        if bad:
            raise InvalidSpec(f"channels: {entry.param!r} has {n0} output channels; index {bad[0]} is out of range")
        for c in entry.channels:
            atom = lab[0][c] if lab[0] is not None else -1
            r = int(roots[atom]) if atom >= 0 else -1
            if r < 0 or r not in root_group:
                raise InvalidSpec(
                    f"channels: channel {c} of {entry.param!r} cannot be removed: {a.atoms.hard.get(r, why_pinned(entry.param))}"
                )
            removed.add(r)
    for g in groups:
        mask = np.isin(g.roots, np.fromiter(removed, dtype=np.int64, count=len(removed))) if removed else np.zeros(len(g.roots), bool)
        g.remove = g.roots[mask]
        if len(g.roots) and mask.all():
            raise InvalidSpec(f"the spec would remove every channel of the group led by {g.leader!r}")
    if not removed and not (spec.input_channels and not spec.constrained):
        free = [g for g in groups if not g.output and not any((n, 0) in g.slots for n in ignored)]
        if not groups:
            stops = sorted({b.op for b in a.barriers})
            reason = "no channel group in this model can be pruned (every channel is pinned" + (
                f"; channels stop at {', '.join(stops)}, which have no channel rule)" if stops else ")")
        elif spec.from_zeros and not (spec.ratio or spec.layers or spec.output_channels or spec.target):
            reason = "from_zeros: no channel has all its producing weights exactly zero (or removing them would change the output)"
        elif not free and spec.ratio > 0:
            reason = ("the only prunable groups reach the model output or are ignored; name their parameters "
                      "in layers or channels to prune them")
        elif (limits := _blocking_limits(groups, per_group_ratio, spec)) is not None:
            fields, reason = limits
            err = InvalidSpec(f"nothing to prune: {reason}")
            err.details = [{"path": f, "message": reason} for f in fields]  # type: ignore[attr-defined]
            raise err
        elif "gradprobe" in inp.details and inp.details["gradprobe"]["candidates"]:
            reason = (f"gradprobe restored all {inp.details['gradprobe']['candidates']} candidate channels (their gradients "
                      f"grew by more than gradient_threshold {spec.gradient_threshold}); raise gradient_threshold")
        elif spec.target is not None:
            reason = f"target {spec.target.metric} {spec.target.fraction} is reached without removing a channel"
        elif spec.ratio == 0:
            reason = "the ratios in layers remove less than one channel from the groups they name"
        else:
            reason = f"ratio {spec.ratio} removes less than one channel from every group"
        raise InvalidSpec(f"nothing to prune: {reason}")
    return Plan(groups=groups, removed=removed, pinned_reasons=_kept_weights(a, groups, tensors, why_pinned),
                warnings=warnings)


def _kept_weights(a: Analysis, groups: list[Group], tensors: dict[str, torch.Tensor], why_pinned) -> dict[str, str]:
    """Weights (2-D and up) that keep every output channel, and why: pinned ones, and those in
    groups that reach the model output and were not named for pruning."""
    def out_dim(name: str) -> int:
        return a.output_dims.get(name, 0)

    kept: dict[str, str] = {}
    in_group = {n for g in groups for n, d in g.slots if d == out_dim(n)}
    for g in groups:
        if g.output and not (g.remove is not None and len(g.remove)):
            for n, d in g.slots:
                if d == out_dim(n) and n in tensors and tensors[n].dim() >= 2:
                    kept[n] = "its channels reach the model output (name it in layers or channels to prune it)"
    for n, t in tensors.items():
        if t.dim() >= 2 and t.shape[out_dim(n)] > 1 and n not in in_group:
            kept[n] = why_pinned(n, out_dim(n))
    return kept


def _blocking_limits(groups: list[Group], per_group_ratio: dict[int, float], spec: Spec) -> tuple[list[str], str] | None:
    """When the ratios would remove channels but ``min_channels``/``round_to`` keep them all: the
    fields to blame and a reason naming them (not the ratio) and the group widths they met."""
    ratios = {gi: r for gi, r in per_group_ratio.items() if len(groups[gi].roots) > 1}
    blame: dict[str, list[int]] = {}
    too_few: list[int] = []  # groups the ratio itself removes nothing from

    def limit(n: int) -> str:
        return "min_channels" if spec.min_channels >= n else "round_to"  # else rounding kept all n

    if spec.global_ranking and spec.ratio > 0:
        pool = [gi for gi in ratios if not any(n in spec.layers for n, d in groups[gi].slots if d == 0)]
        if math.floor(spec.ratio * sum(len(groups[gi].roots) for gi in pool)) >= 1:
            for gi in pool:
                blame.setdefault(limit(len(groups[gi].roots)), []).append(gi)
        else:
            too_few.extend(pool)
        ratios = {gi: r for gi, r in ratios.items() if gi not in pool}
    for gi, r in ratios.items():
        n = len(groups[gi].roots)
        if int(math.floor(r * n + 1e-9)) < 1:
            too_few.append(gi)
        else:
            blame.setdefault(limit(n), []).append(gi)
    if not blame:
        return None

    def widths(gis: list[int]) -> str:
        return ", ".join(str(w) for w in sorted({len(groups[gi].roots) for gi in gis}))

    if set(blame) == {"min_channels"}:
        fields = ["min_channels"]
        reason = (f"min_channels {spec.min_channels} is not below the width of the groups being pruned "
                  f"(widths: {widths(blame['min_channels'])} channels), so they keep every channel; "
                  "lower min_channels")
    elif set(blame) == {"round_to"}:
        fields = ["round_to"]
        reason = (f"round_to {spec.round_to} rounds the channels kept in the groups being pruned back up to all "
                  f"of them (widths: {widths(blame['round_to'])} channels); choose a smaller round_to")
    else:
        fields = ["min_channels", "round_to"]
        reason = (f"min_channels {spec.min_channels} and round_to {spec.round_to} keep every channel of the "
                  f"groups being pruned (widths: {widths(blame['min_channels'] + blame['round_to'])} channels); "
                  "lower them")
    if too_few:
        reason += f"; the ratio removes less than one channel from the others (widths: {widths(too_few)})"
    return fields, reason


def _choose_local(g: Group, ratio: float, spec: Spec, removed: set[int]) -> None:
    n = len(g.roots)
    keep = _keep_count(n, ratio, spec)
    if keep >= n:
        return
    order = np.argsort(g.importance, kind="stable")
    removed.update(int(r) for r in g.roots[order[: n - keep]].tolist())


def global_candidates(groups: list[Group], pool: list[int]) -> list[tuple[float, int, int]]:
    """Every channel of the pooled groups as ``(score, group, root)``, lowest first; a score is the
    channel's importance relative to its group's mean, so groups of any scale compare."""
    cands = []
    for gi in pool:
        g = groups[gi]
        mean = float(np.mean(g.importance)) or 1.0
        for r, s in zip(g.roots.tolist(), (g.importance / mean).tolist()):
            cands.append((s, gi, r))
    cands.sort()
    return cands


def take_lowest(groups: list[Group], cands: list[tuple[float, int, int]], k: int, spec: Spec) -> set[int]:
    """The ``k`` lowest candidates, skipping any that would leave a group below ``min_channels``;
    then each group gives back what ``round_to`` keeps."""
    taken: dict[int, list[int]] = {}
    count = 0
    for s, gi, r in cands:
        if count >= k:
            break
        rs = taken.setdefault(gi, [])
        if len(groups[gi].roots) - len(rs) - 1 < max(1, spec.min_channels):
            continue
        rs.append(r)
        count += 1
    out: set[int] = set()
    for gi, rs in taken.items():
        n = len(groups[gi].roots)
        keep = n - len(rs)
        if spec.round_to > 1:
            keep = min(n, int(math.ceil(keep / spec.round_to) * spec.round_to))
        out.update(rs[: n - keep])
    return out


def _choose_global(groups: list[Group], pool: list[int], spec: Spec, removed: set[int]) -> None:
    """Rank channels of all pooled groups together, each normalised by its group's mean."""
    if not pool:
        return
    cands = global_candidates(groups, pool)
    removed.update(take_lowest(groups, cands, int(math.floor(spec.ratio * len(cands))), spec))
