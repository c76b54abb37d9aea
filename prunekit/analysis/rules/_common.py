"""Shared pieces of the built-in rules: the table, the decorator, label helpers."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..context import Labels
from ..ruleset import RuleSet

aten = torch.ops.aten

RULES = RuleSet(name="built-in")
"""The built-in table.  Users add rules without editing it: ``prune(..., rules=...)`` or the
``prunekit.rules`` entry points (``ruleset.py``), which are looked up first."""


def rule(*ops: Any, rewrite: Callable | None = None) -> Callable[[Callable], Callable]:
    """A built-in entry (``RuleSet.rule``); ``ops`` may be empty where this torch build lacks them."""
    if not ops:
        return lambda fn: fn
    return RULES.rule(*ops, rewrite=rewrite)


def _ops(*names: str) -> list:
    """Resolve aten packet names that exist in this torch build (older builds lack some)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def _with_inplace(*names: str) -> list:
    """The ops and their in-place forms (``relu_``), which eager-style exports keep."""
    return _ops(*names, *(n + "_" for n in names))


def _none(n: int) -> Labels:
    return tuple(None for _ in range(n))


def _dim(d: int, ndim: int) -> int:
    return d % ndim if ndim else 0


def _as_array(lab: np.ndarray | None, n: int) -> np.ndarray:
    return lab if lab is not None else np.full(n, -1, dtype=np.int64)


def _has(lab: np.ndarray | None) -> bool:
    return lab is not None and bool((lab >= 0).any())
