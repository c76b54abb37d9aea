"""The channel rules: one entry per ATen op, in one table.

A rule has two halves:

* ``propagate(ctx, node) -> labels``: read the labels of the inputs, couple (``ctx.unify``) the
  dimensions that must lose the same channels, pin (``ctx.pin``) the ones that must not change,
  and return the labels of the output.  The masked-vs-pruned check verifies that the rule is right.
* ``rewrite(rw, node)`` (optional): after channels are removed, fix the node's non-tensor
  arguments (a ``view`` size, a conv's ``groups``, a split's sizes).

The table is split by op family, one module each, so the rule for an op is found in the file
named after its family:

================ ================================================================================
module           ops
================ ================================================================================
``elementwise``  pointwise ops with broadcasting, dropout, prelu, triu/tril, pixel (un)shuffle, glu
``conv_linear``  convolutions (incl. transposed, grouped), linear, mm/bmm/matmul, addmm, embedding
``attention``    scaled_dot_product_attention (grouped-query too; head dims: ``analysis/heads.py``)
``norm``         batch/instance/layer/group/RMS norm, weight norm
``spatial``      pooling, padding, interpolation
``reductions``   sum/mean/amax/…, max/min, norms, softmax-like ops along a dimension
``join_split``   cat, stack, split/chunk, unbind
``index``        slice, narrow, select, index_select, index, gather
``views``        permute/transpose, view/reshape (factor groups), expand, flatten, squeeze
``created``      zeros/ones/full and other tensors the graph fills with a constant
``recurrent``    the fused GRU/LSTM/RNN ops
``_common``      the table ``RULES``, the ``@rule`` decorator, label helpers
================ ================================================================================

Adding an op is adding one ``@rule(...)`` entry to its family's module.  An op without a rule is a barrier: every channel
that reaches it is kept, and the report names it.  Ops of other libraries get their rules from the user
(``prune(..., rules=...)``, the ``prunekit.rules`` entry points: see ``ruleset.py``), never here.

Semantics the rules rely on: in the masked original every pruned channel is zero wherever it
appears, so an op that *sums* over a channel dimension (a conv's input channels, a matmul's inner
dimension, ``sum``) is unaffected by the removal, while an op that *normalises* or *averages* over
it (``layer_norm``, ``softmax``, ``mean``) is not and must pin it; statistics (means, variances,
RMS) go through ``ctx.statistics_over``, which pins them or, with ``normalized_dims: prune``, has
the masked original take them over the kept channels.
"""

from __future__ import annotations

# Importing a family module registers its rules in RULES.
from . import attention, conv_linear, created, elementwise, index, join_split, norm, recurrent, reductions, spatial, views  # noqa: F401,E501
from ..ruleset import Rule
from ._common import RULES, rule

__all__ = ["RULES", "Rule", "rule"]
