"""Everything a rule author needs, in one place: what a rule sees and what it may do.

A rule is ``propagate(ctx, node) -> labels`` (and optionally ``rewrite(rw, node)``): it reads the
labels of the node's inputs through :class:`Ctx`, couples dimensions that must lose the same
channels (``ctx.unify``), pins those that must stay (``ctx.pin``, ``ctx.pin_all``), and returns
the labels of the output.  :class:`Labels` are a tuple with one entry per dimension: ``None``
(no channels) or an int vector of atom ids (``-1``: an index that carries no channel).
:class:`Rule` and :class:`RuleSet` (``ruleset.py``) make entries and tables of them; the
built-in table is ``rules/``, one module per op family.

Rules go through these methods only; the graph walk (``walk.py``) drives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.fx as fx

from .ruleset import Rule, RuleSet

if TYPE_CHECKING:
    from .walk import Analysis

__all__ = ["Barrier", "Ctx", "Labels", "Rule", "RuleSet"]


Labels = tuple  # tuple[np.ndarray | None, ...]


@dataclass
class Barrier:
    node: str
    op: str
    reason: str


class Ctx:
    """What a rule may see and do while analysing one node."""

    def __init__(self, analysis: Analysis) -> None:
        self.a = analysis
        self.atoms = analysis.atoms
        self.node: fx.Node | None = None
        self._bound: tuple[fx.Node, dict[str, Any]] | None = None

    # --- reading -------------------------------------------------------------------------
    def shape(self, arg: Any) -> tuple[int, ...] | None:
        if isinstance(arg, fx.Node):
            s = self.a.shapes.get(arg.name)
            return s if isinstance(s, tuple) else None
        return None

    def out_shape(self) -> tuple[int, ...] | None:
        return self.shape(self.node)

    def is_tensor(self, arg: Any) -> bool:
        return self.shape(arg) is not None

    def symbolic(self, arg: Any) -> tuple[bool, ...]:
        s = self.a.symbolic.get(arg.name) if isinstance(arg, fx.Node) else None
        shape = self.shape(arg) or ()
        return s if isinstance(s, tuple) else tuple(False for _ in shape)

    def lab(self, arg: Any) -> Labels | None:
        """Labels of a tensor argument (a tuple of Nones for tensors without channels)."""
        if not isinstance(arg, fx.Node):
            return None
        lab = self.a.labels.get(arg.name)
        if isinstance(lab, tuple):
            return lab
        shape = self.shape(arg)
        return tuple(None for _ in shape) if shape is not None else None

    def lab_list(self, arg: Any) -> list:
        return self.a.labels.get(arg.name) if isinstance(arg, fx.Node) else None

    def out_shapes(self) -> Any:
        """The recorded output shape(s) of the current node: a tuple, or a list for multi-output ops."""
        return self.a.shapes.get(self.node.name)

    @property
    def eager(self) -> bool:
        """Whether the pruned model will be run by the architecture's own ``forward`` (state-dict
        output), where widths the code hard-codes cannot change."""
        return self.a.eager

    @property
    def args(self) -> dict[str, Any]:
        """The current node's arguments by name, defaults filled in (``arguments.bound``)."""
        from .arguments import bound

        if self._bound is None or self._bound[0] is not self.node:
            self._bound = (self.node, bound(self.node))
        return self._bound[1]

    @property
    def input(self) -> Any:
        """The op's first argument, whatever its schema calls it (``self``, ``input``, ``query``):
        the tensor that unary, view and reduction rules follow."""
        return next(iter(self.args.values()), None)

    # --- acting ----------------------------------------------------------------------------
    def unify(self, a: np.ndarray | None, b: np.ndarray | None, why: str = "") -> np.ndarray | None:
        return self.atoms.union_arrays(a, b, why or self.reason("couples a channel to an unprunable one"))

    def pin(self, a: np.ndarray | None, why: str) -> None:
        self.atoms.pin(a, self.reason(why))

    def statistics_over(self, dims: "list[np.ndarray | None]", why: str) -> bool:
        """The op takes statistics (a mean, a variance, an RMS) over these label dimensions.

        With ``normalized_dims: keep`` (the default) they are pinned: removing a channel would
        change every output, not only the removed channel's.  With ``prune`` they may lose
        channels; the node is recorded, and the masked reference (``verify/masked.py``) computes
        it over the kept channels only, as the pruned model will.  Returns whether they may go."""
        if self.a.normalized_dims == "prune":
            if any(d is not None and bool((d >= 0).any()) for d in dims):
                self.a.renormalised[self.node.name] = why
            return True
        for d in dims:
            self.pin(d, why)
        return False

    def pin_all(self, lab: Labels | None, why: str) -> None:
        for d in lab or ():
            self.pin(d, why)

    def reason(self, why: str) -> str:
        op = _op_name(self.node) if self.node is not None else "?"
        return f"{why} ({op} at node {self.node.name if self.node is not None else '?'})"

    def merge(self, atoms: np.ndarray) -> int:
        """Make these atoms one channel (they must be removed together); returns its root."""
        return self.atoms.merge(atoms)

    def weight_output_dim(self, param: str, dim: int) -> None:
        """Record that ``param``'s output channels are along ``dim`` (a transposed conv's 1), for the
        report's list of weights that keep every channel."""
        self.a.output_dims[param] = dim

    def created(self, labels: Labels) -> None:
        """Record the labels of a tensor the current node fills with a constant (it has atoms of its own)."""
        self.a.created[self.node.name] = labels

    def fresh(self, shape: tuple[int, ...], symbolic: tuple[bool, ...]) -> Labels:
        """New atoms on every fixed dimension of size > 1."""
        return tuple(
            self.atoms.new(n) if (n > 1 and not sym) else None for n, sym in zip(shape, symbolic)
        )

    def barrier(self, why: str) -> None:
        node = self.node
        touched = False
        for arg in _flat_args(node):
            lab = self.lab(arg)
            if lab and any(d is not None for d in lab):
                touched = True
                self.pin_all(lab, why)
            lst = self.lab_list(arg)
            if isinstance(lst, list):
                for item in lst:
                    if isinstance(item, tuple) and any(d is not None for d in item):
                        touched = True
                        self.pin_all(item, why)
        if touched:
            self.a.barriers.append(Barrier(node.name, _op_name(node), why))


def _flat_args(node: fx.Node) -> list:
    out: list = []

    def visit(v: Any) -> None:
        if isinstance(v, fx.Node):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, dict):
            for x in v.values():
                visit(x)

    visit(node.args)
    visit(node.kwargs)
    return out


def _op_name(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return f"aten.{t.__name__}" if t.namespace == "aten" else f"{t.namespace}.{t.__name__}"
    if isinstance(t, torch._ops.HigherOrderOperator):
        return f"higher_order.{t.__name__}"
    if isinstance(t, str):
        return f"{node.op}:{t}"
    return getattr(t, "__name__", str(t))
