"""What the calibration data says about each weight: gradients and input-activation norms.

The data-driven criteria need one of two kinds of evidence, both measured on the captured graph
(the same graph the check runs, so every criterion sees the model exactly as uploaded):

* gradients of the loss (:mod:`.objective`) with respect to every floating-point parameter, one
  batch at a time (:func:`batch_gradients`): Taylor importance sums ``weight × gradient`` per batch,
  GradProbe records the element-wise largest ``|gradient|`` over the batches;
* the L2 norm of the input each matmul-like weight multiplies, per input feature
  (:func:`input_norms`): WANDA's ``|w| × ‖x_j‖``.

``scale`` multiplies parameters for the duration of a pass without touching the graph module's own
tensors (GradProbe's tentative reduction).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.fx as fx

from .calibration import Calibration
from .objective import first_tensor, loss_of

aten = torch.ops.aten


@contextlib.contextmanager
def _scaled(gm: fx.GraphModule, scale: dict[str, torch.Tensor] | None):
    """Multiply parameters by ``scale[name]`` (a broadcastable tensor) for the duration."""
    saved = {}
    try:
        if scale:
            params = dict(gm.named_parameters())
            with torch.no_grad():
                for name, s in scale.items():
                    p = params[name]
                    saved[name] = p.detach().clone()
                    p.mul_(s.to(p.dtype))
        yield
    finally:
        if saved:
            params = dict(gm.named_parameters())
            with torch.no_grad():
                for name, v in saved.items():
                    params[name].copy_(v)


def batch_gradients(gm: fx.GraphModule, cal: Calibration, *, names: set[str] | None = None,
                    scale: dict[str, torch.Tensor] | None = None, reference: fx.GraphModule | None = None,
                    ) -> Iterator[dict[str, torch.Tensor]]:
    """Per calibration batch, ``{parameter: gradient}`` of the loss (the graph's tensors unchanged).

    ``reference`` gives the original's outputs for ``loss: none`` (defaults to ``gm`` unscaled).
    """
    params = {n: p for n, p in gm.named_parameters() if p.is_floating_point() and (names is None or n in names)}
    flags = {n: p.requires_grad for n, p in gm.named_parameters()}
    ref_model = reference if reference is not None else gm
    try:
        for n, p in gm.named_parameters():
            p.requires_grad_(n in params)
        for x, y in cal.batches("train"):
            ref = None
            if cal.loss == "none":
                with torch.no_grad():
                    ref = first_tensor(ref_model(*x)).detach()
            with _scaled(gm, scale), torch.enable_grad():
                for p in params.values():
                    p.grad = None
                loss = loss_of(cal.loss, first_tensor(gm(*x)), y, ref)
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            yield {n: (torch.zeros_like(p) if g is None else g.detach()) for (n, p), g in zip(params.items(), grads)}
    finally:
        for n, p in gm.named_parameters():
            p.requires_grad_(flags[n])


def max_abs_gradients(gm: fx.GraphModule, cal: Calibration, *, names: set[str] | None = None,
                      scale: dict[str, torch.Tensor] | None = None, reference=None, on_batch=None) -> dict[str, torch.Tensor]:
    """Element-wise largest ``|gradient|`` over the calibration batches (GradProbe's record)."""
    out: dict[str, torch.Tensor] = {}
    for i, grads in enumerate(batch_gradients(gm, cal, names=names, scale=scale, reference=reference)):
        for n, g in grads.items():
            a = g.abs()
            out[n] = a if n not in out else torch.maximum(out[n], a)
        if on_batch is not None:
            on_batch(i)
    return out


# where the input of a weight sits, and which of its dimensions are input features
_MATMUL_LIKE = {
    aten.linear.default: (0, 1, -1),          # (input arg, weight arg, feature dim of the input)
    aten.convolution.default: (0, 1, 1),
    aten.conv1d.default: (0, 1, 1),
    aten.conv2d.default: (0, 1, 1),
    aten.conv3d.default: (0, 1, 1),
}


def weight_inputs(gm: fx.GraphModule) -> dict[str, tuple[fx.Node, int]]:
    """Each matmul-like weight (a ``get_attr``) → the node of its input and the input's feature dim."""
    out: dict[str, tuple[fx.Node, int]] = {}
    for node in gm.graph.nodes:
        spec = _MATMUL_LIKE.get(node.target) if node.op == "call_function" else None
        if spec is None or len(node.args) <= spec[1]:
            continue
        w = node.args[spec[1]]
        x = node.args[spec[0]]
        if getattr(w, "op", None) == "get_attr" and isinstance(x, fx.Node) and w.target not in out:
            out[w.target] = (x, spec[2])
    return out


def input_norms(gm: fx.GraphModule, cal: Calibration, weights: dict[str, tuple[fx.Node, int]] | None = None,
                ) -> dict[str, torch.Tensor]:
    """Per weight, ``‖x_j‖₂`` over every calibration sample and position, one value per input feature."""
    weights = weight_inputs(gm) if weights is None else weights
    wanted: dict[str, list[tuple[str, int]]] = {}
    for w, (x, dim) in weights.items():
        wanted.setdefault(x.name, []).append((w, dim))
    sums: dict[str, torch.Tensor] = {}

    class _Record(fx.Interpreter):
        def run_node(self, n):
            val = super().run_node(n)
            for w, dim in wanted.get(n.name, ()):
                if isinstance(val, torch.Tensor) and val.is_floating_point():
                    v = val.detach().float().movedim(dim, -1)
                    sq = v.reshape(-1, v.shape[-1]).pow(2).sum(0)
                    sums[w] = sq if w not in sums else sums[w] + sq
            return val

    rec = _Record(gm)
    with torch.no_grad():
        for x, _ in cal.batches("train"):
            rec.run(*x)
    return {w: s.sqrt() for w, s in sums.items()}
