"""What a state-dict output cannot change: every limit of the eager ``forward`` in one place.

A GraphModule or TorchScript output runs the pruned graph, whose every width PruneKit rewrites.
A state-dict output is loaded into the architecture's own Python class and run by *its*
``forward``, which PruneKit never edits.  Four kinds of code there cannot follow a prune:

* splits by fixed sizes (``x.split(64, -1)``): the sizes stay, so the split dimension is pinned;
  splits into equal parts (``x.chunk(2, 1)``) re-divide whatever arrives, so the parts must keep
  equal counts (:func:`split`);
* the default attention scale ``1/sqrt(head_dim)``, recomputed from the pruned width, where the
  graph kept the original's constant: the head width is pinned (:func:`attention_scale`);
* modules that check their own widths (``nn.MultiheadAttention`` compares ``embed_dim`` with its
  input): their tensors are frozen whole (:func:`frozen_tensors`, :data:`FIXED_STRUCTURE`);
* reshapes that split a channel dimension with one size written down and the other computed
  (``q.view(batch, seq, -1, self.head_dim)``, Hugging Face's attention): only the computed part
  can shrink, so the channels are carried by that dimension (the heads), not by the fixed one
  (:func:`computed_dims`; the exported graph keeps the ``-1`` the code wrote).

Rules call the first two only when ``ctx.eager`` (the analysis was asked for a state-dict
output); the API passes the third to the analysis.  A newcomer adding a limit adds it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.fx as fx
import torch.nn as nn

if TYPE_CHECKING:
    from .context import Ctx, Labels

FIXED_STRUCTURE: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)


def frozen_tensors(model: nn.Module) -> dict[str, str]:
    """Tensors whose shapes a state-dict output cannot change, with the reason for each."""
    out: dict[str, str] = {}
    for mname, m in model.named_modules():
        if isinstance(m, FIXED_STRUCTURE):
            for pname, _ in list(m.named_parameters()) + list(m.named_buffers()):
                fqn = f"{mname}.{pname}" if mname else pname
                out[fqn] = f"{type(m).__name__} {mname!r} cannot change its widths in a state-dict output"
    return out


def split(ctx: "Ctx", node: fx.Node, whole, pieces: list, sizes: list[int]) -> None:
    """Constrain a split along labels ``whole`` (cut into ``pieces`` of ``sizes``) as eager code
    will redo it."""
    args = ctx.args
    name = node.target.overloadpacket.__name__
    by_count = name == "chunk" or (name == "tensor_split" and isinstance(args.get("sections", args.get("indices")), int))
    if by_count:
        if len(set(sizes)) == 1:
            # the j-th channel of every part goes with the j-th of the first: equal counts stay equal
            for k in range(1, len(pieces)):
                ctx.unify(pieces[0], pieces[k], ctx.reason("equal parts in eager code"))
        return
    ctx.pin(whole, "split by fixed sizes in eager code")


def computed_dims(ctx: "Ctx") -> frozenset[int]:
    """Output dims of a ``view``/``reshape`` whose size the code left to be computed (``-1``)."""
    args = ctx.args
    sizes = args.get("size", args.get("shape"))
    if not isinstance(sizes, (list, tuple)):
        return frozenset()
    return frozenset(i for i, s in enumerate(sizes) if isinstance(s, int) and s == -1)


def attention_scale(ctx: "Ctx", q: "Labels", k: "Labels") -> None:
    """Eager code recomputes the default scale 1/sqrt(head_dim) from the pruned width."""
    if ctx.args.get("scale") is None:
        ctx.pin(q[-1], "default attention scale depends on the head width")
        ctx.pin(k[-1], "default attention scale depends on the head width")
