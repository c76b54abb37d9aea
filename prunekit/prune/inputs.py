"""Input channels of one consumer: the consumer stops reading them, the producer keeps serving the rest.

Seed 003 names *input* channels (``('layer1.1.conv1.weight', 5)``: input channel 5 of that one
convolution).  In a residual network that channel belongs to a stream other layers still read, so
removing it from its producer would change them too.  Instead the consumer reads a
*subselection* of its input and its weight loses those columns:

    producer ──(C channels)──┬──────────────────▶ other consumers (unchanged)
                             └─ subselect(K of C) ─▶ this consumer (weight [out, K, ...])

The subselection is a ``slice`` (a narrow: a view, free at inference) when the kept channels are
one contiguous run, else an ``index_select`` (a gather, one copy).  The masked original of this
step is the model as uploaded with those weight columns zeroed at that consumer only; the API
proves the subselected graph equal to it before any output channel is cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx as fx

from ..analysis.arguments import bound, set_argument
from ..errors import InvalidSpec
from ..graph_copy import shared_copy
from ..spec import ChannelRemoval
from .surgery import _get_tensor, _set_tensor

if TYPE_CHECKING:
    from ..analysis.walk import Analysis

aten = torch.ops.aten
_CONSUMERS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "linear"}


@dataclass
class Subselected:
    gm: fx.GraphModule        # the capture whose consumers read only what they keep
    consumers: list[dict] = field(default_factory=list)

    def report(self) -> dict:
        kinds = [c["subselection"] for c in self.consumers]
        return {"consumers": self.consumers, "narrows": kinds.count("narrow"), "gathers": kinds.count("gather")}


def _consumer(gm: fx.GraphModule, param: str, node: fx.Node | None = None) -> fx.Node:
    node = node or next((n for n in gm.graph.nodes if n.op == "get_attr" and n.target == param), None)
    if node is None:
        raise InvalidSpec(f"channels: {param!r} is not a tensor the captured graph reads")
    users = list(node.users)
    if len(users) != 1:
        raise InvalidSpec(f"channels: {param!r} is read by {len(users)} ops; dim 'in' needs exactly one consumer")
    user = users[0]
    name = user.target.overloadpacket.__name__ if isinstance(user.target, torch._ops.OpOverload) else str(user.target)
    args = bound(user)
    if name not in _CONSUMERS or args.get("weight") is not node:
        raise InvalidSpec(f"channels: {param!r} is read by {name}; dim 'in' removes input channels of a "
                          "convolution's or linear layer's weight")
    if args.get("transposed") or int(args.get("groups", 1)) != 1:
        raise InvalidSpec(f"channels: {param!r} belongs to a grouped or transposed convolution; dim 'in' "
                          "handles plain convolutions and linear layers")
    return user


def _channel_dim(consumer: fx.Node, weight: torch.Tensor) -> int:
    if consumer.target.overloadpacket.__name__ == "linear":
        return -1
    val = bound(consumer)["input"].meta.get("val")
    rank = val.dim() if isinstance(val, torch.Tensor) else weight.dim()
    return 1 if rank == weight.dim() else 0  # batched or unbatched input


def subselect(gm: fx.GraphModule, entries: list[ChannelRemoval]) -> Subselected:
    """Make every named consumer read only the input channels it keeps (see the module docstring)."""
    wanted: dict[str, set[int]] = {}
    for e in entries:
        wanted.setdefault(e.param, set()).update(e.channels)
    sub = shared_copy(gm)
    out = Subselected(sub)
    for k, (param, drop) in enumerate(sorted(wanted.items())):
        consumer = _consumer(sub, param)
        w = _get_tensor(sub, param)
        n_in = int(w.shape[1])
        bad = sorted(c for c in drop if c >= n_in)
        if bad:
            raise InvalidSpec(f"channels: {param!r} has {n_in} input channels; index {bad[0]} is out of range")
        keep = [c for c in range(n_in) if c not in drop]
        if not keep:
            raise InvalidSpec(f"channels: the spec would remove every input channel of {param!r}")
        x = bound(consumer)["input"]
        d = _channel_dim(consumer, w)
        with sub.graph.inserting_before(consumer):
            if keep == list(range(keep[0], keep[-1] + 1)):
                picked = sub.graph.call_function(aten.slice.Tensor, (x, d, keep[0], keep[-1] + 1))
                kind = "narrow"
            else:
                name = f"_prunekit_inputs_{k}"
                sub.register_buffer(name, torch.tensor(keep, dtype=torch.long))
                picked = sub.graph.call_function(aten.index_select.default, (x, d, sub.graph.get_attr(name)))
                kind = "gather"
        set_argument(consumer, "input", picked)
        with torch.no_grad():
            _set_tensor(sub, param, w.detach()[:, keep].clone())
        out.consumers.append({"param": param, "removed": sorted(drop), "kept": len(keep), "subselection": kind})
    sub.graph.lint()
    sub.recompile()
    return out


def column_roots(a: "Analysis", roots: np.ndarray, param: str) -> np.ndarray | None:
    """The channel (root atom) each input column (dim 1) of ``param`` reads; ``-1`` where a
    column carries none; ``None`` when the tensor has no labelled input dimension."""
    lab = a.attr_labels.get(param)
    if not lab or len(lab) < 2 or not isinstance(lab[1], np.ndarray):
        return None
    arr = lab[1]
    out = np.full(len(arr), -1, dtype=np.int64)
    out[arr >= 0] = roots[arr[arr >= 0]]
    return out


def constrained(a: "Analysis", tensors: dict[str, torch.Tensor], entries: list[ChannelRemoval]) -> tuple[set[int], dict]:
    """Seed 003's constrained mode: no subselection; the named input channels go from their
    producer, so every reader of those channels loses them too.  Returns the channel roots to
    remove and what the removal grew by (the other tensors that lose them)."""
    roots = a.atoms.roots()
    out: set[int] = set()
    for e in entries:
        n_in = int(tensors[e.param].shape[1]) if e.param in tensors and tensors[e.param].dim() >= 2 else 0
        bad = [c for c in e.channels if c >= n_in]
        if bad:
            raise InvalidSpec(f"channels: {e.param!r} has {n_in} input channels; index {bad[0]} is out of range")
        cols = column_roots(a, roots, e.param)
        for c in e.channels:
            r = int(cols[c]) if cols is not None else -1
            if r < 0 or r in a.atoms.hard or r in a.atoms.output:
                why = a.atoms.hard.get(r, "it reaches the model's input or output") if r >= 0 else "it carries no prunable channel"
                raise InvalidSpec(f"channels: input channel {c} of {e.param!r} cannot be removed from its producer "
                                  f"(constrained): {why}")
            out.add(r)
    named = {e.param for e in entries}
    also = sorted({name for name, lab in a.attr_labels.items() if name not in named and any(
        isinstance(arr, np.ndarray) and np.isin(roots[arr[arr >= 0]], list(out)).any() for arr in lab or ())})
    return out, {"mode": "constrained", "channels": len(out), "also_removed_from": also}


def unread(a: "Analysis", tensors: dict[str, torch.Tensor], entries: list[ChannelRemoval]
           ) -> tuple[list[ChannelRemoval], list[ChannelRemoval], set[int]]:
    """Producer channels that no consumer reads any more: every weight that reads the channel (a
    tensor dimension carrying it other than the tensor's output dimension) is a named consumer
    dropping it.  Returns them as output-channel entries of their group's leader (removed outright
    with everything coupled), the input entries that remain, and their roots (for the proof)."""
    from .plan import find_groups

    roots = a.atoms.roots()
    dropping: dict[str, set[int]] = {}
    for e in entries:
        cols = column_roots(a, roots, e.param)
        if cols is not None and max(e.channels) < len(cols):
            dropping[e.param] = {int(cols[c]) for c in e.channels if cols[c] >= 0}
    readers: dict[int, set[str]] = {}
    for name, lab in a.attr_labels.items():
        out_d = a.output_dims.get(name, 0)
        for d, arr in enumerate(lab or ()):
            if d != out_d and isinstance(arr, np.ndarray):
                for r in set(roots[arr[arr >= 0]].tolist()):
                    readers.setdefault(int(r), set()).add(name)
    gone = {r for r, names in readers.items()
            if r not in a.atoms.hard and r not in a.atoms.output and all(r in dropping.get(n, ()) for n in names)}
    if not gone:
        return [], list(entries), set()
    groups, _ = find_groups(a, tensors)
    outright: list[ChannelRemoval] = []
    assigned: set[int] = set()
    for g in groups:
        rs = [int(r) for r in g.roots.tolist() if int(r) in gone]
        if not rs or len(rs) == len(g.roots):  # a group is never emptied: those stay subselections
            continue
        assigned |= set(rs)
        # name the channels by a weight matrix that produces them (a bias names them as well, less clearly)
        leader = next((n for n, d in g.slots if d == a.output_dims.get(n, 0) == 0 and n in tensors
                       and tensors[n].dim() >= 2), g.leader)
        lead = a.attr_labels[leader][0]
        idx = [i for i, atom in enumerate(lead.tolist()) if atom >= 0 and int(roots[atom]) in set(rs)]
        outright.append(ChannelRemoval(param=leader, channels=idx, dim="out"))
    gone = assigned
    remaining = []
    for e in entries:
        cols = column_roots(a, roots, e.param) if e.param in dropping else None
        keep = [c for c in e.channels if cols is None or int(cols[c]) not in gone]
        if keep:
            remaining.append(e.model_copy(update={"channels": keep}))
    return outright, remaining, gone


def zero_columns(gm: fx.GraphModule) -> list[ChannelRemoval]:
    """Input channels that a convolution or linear layer already ignores (its weight column is all
    zero, as ``ln_structured(dim=1)`` leaves it): candidates for ``from_zeros``."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        try:
            _consumer(gm, node.target, node)
        except InvalidSpec:
            continue
        w = _get_tensor(gm, node.target).detach()
        cols = (w.transpose(0, 1).reshape(w.shape[1], -1) == 0).all(1)
        idx = torch.nonzero(cols).flatten().tolist()
        if idx and len(idx) < w.shape[1]:
            out.append(ChannelRemoval(param=node.target, channels=idx, dim="in"))
    return out


def zeroed(gm: fx.GraphModule, entries: list[ChannelRemoval]) -> fx.GraphModule:
    """The masked original of this step: ``gm`` with those weight columns zeroed, nothing else."""
    out = shared_copy(gm)
    with torch.no_grad():
        for e in entries:
            w = _get_tensor(out, e.param)
            if w.dim() >= 2 and max(e.channels) < w.shape[1]:
                z = w.detach().clone()
                z[:, e.channels] = 0
                _set_tensor(out, e.param, z)
    return out
