"""Re-estimate BatchNorm running statistics on the calibration inputs (no labels needed).

Removing channels shifts the statistics every later BatchNorm sees, and its stored running mean and
variance no longer describe them.  Re-estimating them is the cheapest recovery there is.  This does
what ``model.train()`` with ``momentum=None`` does in eager PyTorch, on the captured ATen graph:
every batch-norm op normalises with its batch's own statistics (so the layers after it see what
they would in training) and the cumulative average of those statistics over the batches becomes the
new running mean and (unbiased) variance.

It runs on the *masked original*, whose kept channels compute exactly what the pruned model's
compute, and writes the statistics into the original graph's buffers: the prune that follows slices
them like every other tensor, and the check compares the pruned model with the masked original
under the same new statistics.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from .calibration import Calibration

aten = torch.ops.aten

# op → (input, weight, bias, running_mean, running_var, eps) argument positions
_BATCH_NORMS = {
    aten.batch_norm.default: (0, 1, 2, 3, 4, 7),
    aten._native_batch_norm_legit_no_training.default: (0, 1, 2, 3, 4, 6),
}


def batch_norm_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The eval-mode batch norms whose statistics are graph buffers (``get_attr``)."""
    out = []
    for node in gm.graph.nodes:
        pos = _BATCH_NORMS.get(node.target) if node.op == "call_function" else None
        if pos is None or len(node.args) <= pos[4]:
            continue
        if node.target is aten.batch_norm.default and node.args[5] is True:  # already training-mode
            continue
        if all(getattr(node.args[i], "op", None) == "get_attr" for i in (pos[3], pos[4])):
            out.append(node)
    return out


def estimate(gm: fx.GraphModule, cal: Calibration, *, buffers_of: fx.GraphModule | None = None,
             on_batch=None) -> dict[str, torch.Tensor]:
    """``{buffer name: new value}`` for every batch norm's running mean and variance.

    ``gm`` is run; ``buffers_of`` (default ``gm``) is the graph it was copied from, whose batch
    norms read their statistics straight from buffers (the masked original multiplies them by
    masks first; its nodes keep the original's names).
    """
    nodes = {n.name: n for n in batch_norm_nodes(buffers_of if buffers_of is not None else gm)}
    means: dict[str, list[torch.Tensor]] = {k: [] for k in nodes}
    vars_: dict[str, list[torch.Tensor]] = {k: [] for k in nodes}

    class _Train(fx.Interpreter):
        def run_node(self, node):
            if node.name not in nodes:
                return super().run_node(node)
            target = node.target
            args, _ = self.fetch_args_kwargs_from_env(node)
            i, w, b, _, _, e = _BATCH_NORMS[target]
            x = args[i]
            dims = [d for d in range(x.dim()) if d != 1]
            xf = x.detach().float()
            mean = xf.mean(dims)
            count = x.numel() // x.shape[1]
            var = xf.var(dims, unbiased=False)
            means[node.name].append(mean)
            vars_[node.name].append(var * (count / max(count - 1, 1)))
            out = F.batch_norm(x, None, None, args[w], args[b], training=True, eps=float(args[e]))
            if target is aten._native_batch_norm_legit_no_training.default:
                empty = x.new_zeros((0,))
                return out, empty, empty
            return out

    run = _Train(gm)
    with torch.no_grad():
        for k, (x, _) in enumerate(cal.batches("train")):
            run.run(*x)
            if on_batch is not None:
                on_batch(k)
    out: dict[str, torch.Tensor] = {}
    for name, node in nodes.items():
        if not means[name]:
            continue
        pos = _BATCH_NORMS[node.target]
        rm, rv = node.args[pos[3]].target, node.args[pos[4]].target
        out[rm] = torch.stack(means[name]).mean(0)
        out[rv] = torch.stack(vars_[name]).mean(0)
    return out


def write_statistics(gm: fx.GraphModule, stats: dict[str, torch.Tensor]) -> None:
    """Copy the estimated statistics into ``gm``'s buffers (same names, same shapes)."""
    with torch.no_grad():
        for name, value in stats.items():
            holder = gm
            *path, leaf = name.split(".")
            for part in path:
                holder = getattr(holder, part)
            buf = getattr(holder, leaf)
            buf.copy_(value.to(buf.dtype))
