"""A copy of a captured graph module that shares its tensors: the one way the engine copies.

Every step after capture derives a model from the captured one (the masked original for the check,
the pruned model, the subselected or reordered graph, the graph the TorchScript writer scripts).
``copy.deepcopy`` would also copy every weight: one more full model in memory per step, which is
most of what a job's peak was made of.  These steps only *replace* tensors (``_set_tensor`` with a
freshly sliced one) or add buffers; none writes into a tensor it was handed.  So the module tree,
the graph and every attribute are copied as usual, while tensors (parameters, buffers, plain
tensor attributes) are the original's.

A step that must write in place clones the tensors it writes first (``unstructured.zeroed``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def shared_copy(module: nn.Module) -> nn.Module:
    """``copy.deepcopy(module)``, except that every tensor it holds is shared, not copied."""
    memo: dict[int, object] = {}
    for m in module.modules():
        for v in (*m._parameters.values(), *m._buffers.values(), *vars(m).values()):
            if isinstance(v, torch.Tensor):
                memo[id(v)] = v
    return copy.deepcopy(module, memo)
