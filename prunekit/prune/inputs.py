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

import copy
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ..analysis.arguments import bound, set_argument
from ..errors import InvalidSpec
from ..spec import ChannelRemoval
from .surgery import _get_tensor, _set_tensor

aten = torch.ops.aten
_CONSUMERS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "linear"}


@dataclass
class Subselected:
    gm: fx.GraphModule        # the capture whose consumers read only what they keep
    zeroed: fx.GraphModule    # the capture with those weight columns zeroed: what ``gm`` must equal
    consumers: list[dict] = field(default_factory=list)

    def report(self) -> dict:
        kinds = [c["subselection"] for c in self.consumers]
        return {"consumers": self.consumers, "narrows": kinds.count("narrow"), "gathers": kinds.count("gather")}


def _consumer(gm: fx.GraphModule, param: str) -> fx.Node:
    node = next((n for n in gm.graph.nodes if n.op == "get_attr" and n.target == param), None)
    if node is None:
        raise InvalidSpec(f"channels: {param!r} is not a tensor the captured graph reads")
    users = list(node.users)
    if len(users) != 1:
        raise InvalidSpec(f"channels: {param!r} is read by {len(users)} ops; dim 'in' needs exactly one consumer")
    user = users[0]
    name = user.target.overloadpacket.__name__ if isinstance(user.target, torch._ops.OpOverload) else str(user.target)
    if name not in _CONSUMERS or bound(user).get("weight") is not node:
        raise InvalidSpec(f"channels: {param!r} is read by {name}; dim 'in' removes input channels of a "
                          "convolution's or linear layer's weight")
    args = bound(user)
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
    sub, zeroed = copy.deepcopy(gm), copy.deepcopy(gm)
    out = Subselected(sub, zeroed)
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
            z = _get_tensor(zeroed, param).detach().clone()
            z[:, sorted(drop)] = 0
            _set_tensor(zeroed, param, z)
        out.consumers.append({"param": param, "removed": sorted(drop), "kept": len(keep), "subselection": kind})
    sub.graph.lint()
    sub.recompile()
    return out
