"""The op table is open: :class:`Rule`, :class:`RuleSet`, and which table a node's rule comes from.

Why this file exists: the built-in rules (``rules/``) cover ATen.  A model that calls an op of
its own (a ``torch.library`` custom op, a vendor kernel) would have every channel that touches
that op kept, and the only way out would be forking ``rules/``.  Instead, in the spirit of
Torch-Pruning's ``customized_pruners``, a user hands PruneKit more rules:

* per call: ``prunekit.prune(model, spec, rules=extra)`` (and ``prune_to_dir(..., rules=extra)``);
* per installation: a package declares a ``RuleSet`` (or a ``{op: Rule}`` dict) in the entry-point
  group ``prunekit.rules`` (``name = "pkg.module:RULES"``); the group is read once, on first use.

A node's rule is looked up in the rules of the call, then the entry points', then the built-in
table; in each, the op's exact overload (``mylib.scale_channels.default``) before its packet
(``mylib.scale_channels``).  So extra rules win for the ops they name, and everything else is
unchanged.  An op that no table names stays a barrier: its channels are kept and the report names
it.  A wrong extra rule cannot ship a broken model either: the check compares the pruned model
with the masked original, exactly as for the built-in rules.

This module imports nothing else from the package at run time, so ``rules``, ``resolve`` and
``surgery`` can all import it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, Union

import torch
import torch.fx as fx

from ..errors import InvalidRule

if TYPE_CHECKING:  # only for the annotations: resolve and surgery import this module
    from .context import Ctx
    from ..prune.surgery import Rewriter

ENTRY_POINT_GROUP = "prunekit.rules"

Propagate = Callable[["Ctx", fx.Node], Any]
"""``propagate(ctx, node) -> labels of the output`` (a ``Labels`` tuple, a list of them for ops
with several outputs, or ``None`` for no channels)."""

Rewrite = Callable[["Rewriter", fx.Node], None]
"""``rewrite(rw, node)``: after removal, fix the node's non-tensor arguments (sizes, groups)."""

Op = Any
"""What a graph node's ``target`` can be: an ``OpOverload`` (``torch.ops.mylib.f.default``), an
``OpOverloadPacket`` (``torch.ops.mylib.f``, every overload) or a Python callable
(``operator.mul``)."""

RulesArg = Union["RuleSet", Mapping[Op, "Rule"], Iterable[Union["RuleSet", Mapping[Op, "Rule"]]], None]
"""What ``prune(..., rules=...)`` accepts: one table, or several (later ones win for an op)."""


@dataclass(frozen=True)
class Rule:
    """How channels flow through one op (``propagate``) and how its arguments change (``rewrite``)."""

    propagate: Propagate
    rewrite: Rewrite | None = None

    def __post_init__(self) -> None:
        if not callable(self.propagate):
            raise InvalidRule(f"Rule.propagate must be a function (ctx, node) -> labels, not {_describe(self.propagate)}")
        if self.rewrite is not None and not callable(self.rewrite):
            raise InvalidRule(f"Rule.rewrite must be None or a function (rw, node) -> None, not {_describe(self.rewrite)}")


class RuleSet(MutableMapping):
    """A table ``{op: Rule}``: the built-in one (``rules.RULES``) and any a user adds.

    >>> extra = RuleSet()
    >>> @extra.rule(torch.ops.aten.relu)
    ... def relu(ctx, node):
    ...     return ctx.lab(node.args[0])
    >>> extra[torch.ops.aten.relu].propagate is relu
    True

    Keys and values are checked when they are set, so a mistake is reported where it is made.
    """

    def __init__(self, entries: "Mapping[Op, Rule] | None" = None, *, name: str = "") -> None:
        self.name = name
        self._rules: dict[Op, Rule] = {}
        if entries is not None:
            if not isinstance(entries, Mapping):
                raise InvalidRule(f"a rule table is a mapping {{op: Rule}}, not {_describe(entries)}")
            for op, r in entries.items():
                self[op] = r

    def rule(self, *ops: Op, rewrite: Rewrite | None = None) -> Callable[[Propagate], Propagate]:
        """Decorator: ``propagate`` becomes the rule for every op in ``ops``."""
        if not ops:
            raise InvalidRule("rule() needs at least one op, e.g. @rules.rule(torch.ops.mylib.scale_channels)")
        for op in ops:
            _check_op(op)

        def deco(fn: Propagate) -> Propagate:
            r = Rule(fn, rewrite)
            for op in ops:
                self._rules[op] = r
            return fn

        return deco

    def lookup(self, target: Any) -> Rule | None:
        """The rule for a node's target: its exact overload first, then its packet."""
        try:
            r = self._rules.get(target)
        except TypeError:  # an unhashable target names no rule
            return None
        if r is None and isinstance(target, torch._ops.OpOverload):
            r = self._rules.get(target.overloadpacket)
        return r

    # --- the mapping -----------------------------------------------------------------------
    def __getitem__(self, op: Op) -> Rule:
        return self._rules[op]

    def __setitem__(self, op: Op, r: Rule) -> None:
        _check_op(op)
        if not isinstance(r, Rule):
            hint = f"; wrap the function: prunekit.Rule({getattr(r, '__name__', 'fn')})" if callable(r) else ""
            raise InvalidRule(f"the rule for {_op_label(op)} must be a prunekit.Rule, not {_describe(r)}{hint}")
        self._rules[op] = r

    def __delitem__(self, op: Op) -> None:
        del self._rules[op]

    def __iter__(self) -> Iterator[Op]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        ops = ", ".join(_op_label(op) for op in list(self._rules)[:5])
        more = f", … ({len(self._rules)} ops)" if len(self._rules) > 5 else ""
        return f"RuleSet({self.name + ': ' if self.name else ''}{ops}{more})"


def as_ruleset(rules: RulesArg) -> RuleSet:
    """Validate what a caller passed as ``rules=`` and return one table (later tables win)."""
    out = RuleSet(name="rules=")
    if rules is None:
        return out
    tables = [rules] if isinstance(rules, Mapping) else rules
    if isinstance(tables, (str, bytes)) or not isinstance(tables, Iterable):
        raise InvalidRule(
            f"rules= takes a prunekit.RuleSet, a dict {{op: prunekit.Rule}} or a list of them, not {_describe(rules)}")
    for i, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise InvalidRule(
                f"rules=[...] item {i} is {_describe(table)}; each item must be a prunekit.RuleSet or a dict {{op: prunekit.Rule}}")
        for op, r in table.items():
            out[op] = r
    return out


# ------------------------------------------------------------------------------------------
# The entry-point group ``prunekit.rules``: read once, on first use.
# ------------------------------------------------------------------------------------------
EntryPointSource = Callable[[], Iterable[metadata.EntryPoint]]

_plugins: RuleSet | None = None


def _installed_entry_points() -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def load_entry_points(source: EntryPointSource = _installed_entry_points) -> RuleSet:
    """Read every entry point ``source`` yields into one table (no caching; see :func:`plugin_rules`).

    Each entry point loads to a ``RuleSet`` or a ``{op: Rule}`` dict; importing its module is also
    what registers the plugin's custom ops.  A plugin that fails to load or holds something else
    is skipped with a warning (its ops stay barriers) instead of taking every prune down.  When
    two plugins name one op, the first by entry-point name wins, with a warning.
    """
    out = RuleSet(name=ENTRY_POINT_GROUP)
    owner: dict[Op, str] = {}
    for ep in sorted(source(), key=lambda e: e.name):
        try:
            table = ep.load()
            table = table if isinstance(table, RuleSet) else RuleSet(table)
        except Exception as exc:  # a broken plugin must not take the op table down
            warnings.warn(f"{ENTRY_POINT_GROUP} entry point {ep.name!r} ({ep.value}) is skipped: {exc}", stacklevel=2)
            continue
        for op, r in table.items():
            if op in owner:
                if owner[op] == ep.name:  # one plugin seen twice (an editable install, say)
                    continue
                warnings.warn(f"{ENTRY_POINT_GROUP}: {ep.name!r} and {owner[op]!r} both give a rule for "
                              f"{_op_label(op)}; {owner[op]!r}'s is used", stacklevel=2)
                continue
            owner[op] = ep.name
            out[op] = r
    return out


def plugin_rules() -> RuleSet:
    """The installed entry points' rules, read on the first call and kept for the process."""
    global _plugins
    if _plugins is None:
        _plugins = load_entry_points()
    return _plugins


def extra_rules(rules: RulesArg = None) -> RuleSet:
    """Everything consulted before the built-in table: ``rules`` over the entry points' rules."""
    own = as_ruleset(rules)
    plugins = plugin_rules()
    if not plugins:
        return own
    merged = RuleSet(name="extra")
    for table in (plugins, own):
        for op, r in table.items():
            merged[op] = r
    return merged


def find_rule(target: Any, extra: RuleSet | None = None) -> Rule | None:
    """The rule for a node's target: ``extra`` (call + entry points), then the built-in table."""
    from .rules import RULES  # the built-in table imports Rule from here

    if extra is None:
        extra = plugin_rules()
    return extra.lookup(target) or RULES.lookup(target)


# ------------------------------------------------------------------------------------------
def _check_op(op: Any) -> None:
    if isinstance(op, str):
        raise InvalidRule(f"rules are keyed by the op itself, not its name: write torch.ops.<namespace>.<name> "
                          f"for {op!r} (after the library that defines it is imported)")
    if not callable(op):
        raise InvalidRule(f"a rule's key must be an op (torch.ops.<namespace>.<name>[.<overload>]) or a "
                          f"Python function the graph calls, not {_describe(op)}")
    try:
        hash(op)
    except TypeError:
        raise InvalidRule(f"a rule's key must be hashable, not {_describe(op)}") from None


def _op_label(op: Any) -> str:
    if isinstance(op, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(op)
    return getattr(op, "__qualname__", None) or getattr(op, "__name__", None) or repr(op)


def _describe(v: Any) -> str:
    r = repr(v)
    return f"{type(v).__name__} {r[:60] + '…' if len(r) > 60 else r}"
