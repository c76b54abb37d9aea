"""Scripted control flow, specialised to the example before the converter sees it.

``torch.jit.script`` keeps every Python ``if`` as a ``prim::If``.  TS2EPConverter turns each
into ``torch.cond``, which fails on almost every real model (branches that raise, return
different types or mutate lists), so no scripted transformer converted.  But the conditions in
real models are about shapes, dtypes, ``None``-ness, flags and "is the fast path allowed": they
are the same for every input the model is meant to take.  This module prepares the converter's
graph (the frozen, inlined ``forward`` with parameters as inputs) so that:

* optional arguments the example does not give take their declared defaults (constants), and
  attribute reads of parameters become the parameter inputs;
* loops with a constant trip count are unrolled;
* every ``if`` whose condition depends only on sizes, dtypes, devices, ``None``-ness, attributes
  and grad/autocast state is evaluated by running the graph on the example, and replaced by
  the branch it took (nested ``if``s are reached round by round);
* an ``if`` that takes a different branch at another batch size is refused, naming its source
  line: the pruned model must accept every batch the upload accepted;
* an ``if`` on tensor values (``if x.sum() > 0``) is refused, naming its source line: the
  example's branch would silently be the only one, and a ``torch.cond`` has no channel rule.

The probes run with gradients enabled and the parameters requiring grad, so branches that pick a
fused inference kernel (``nn.MultiheadAttention``'s fast path) take the general path, made of the
ops the channel analysis understands; both paths compute the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import CaptureFailed


# Ops that read a tensor's metadata, never its values: a condition built from them is the same
# for every input of the example's shape.
METADATA_OPS = frozenset({
    "aten::size", "aten::dim", "aten::len", "aten::numel", "aten::__is__", "aten::__isnot__",
    "aten::is_floating_point", "aten::is_complex", "prim::dtype", "prim::device", "prim::layout",
    "prim::shape", "prim::requires_grad", "prim::is_nested", "prim::is_cuda", "prim::is_sparse",
    "prim::is_sparse_csr", "prim::is_mkldnn", "prim::is_quantized", "prim::is_meta", "prim::is_xpu",
    "prim::is_mps", "prim::is_vulkan", "prim::is_ipu", "prim::is_maia", "prim::is_xla", "prim::is_mtia",
})

PROBE_BATCHES = (3, 1)  # besides the example's own; a branch that differs at either is refused
MAX_ROUNDS = 64         # nesting depth reached one level per round; real models need < 10


@dataclass
class PreparedGraph:
    graph: torch._C.Graph
    params: list
    module: object                                 # the frozen module the graph belongs to
    specialised: int = 0                           # ifs replaced by their taken branch


def _tensorish(value) -> bool:
    return "Tensor" in str(value.type())


def source_line(node) -> str:
    """``file, line N: `code``` of a TorchScript node: its source range prints the function from
    a ``File "...", line L`` header (L: the function's first line) and underlines the node's line."""
    lines = (node.sourceRange() or "").splitlines()
    header = re.match(r'\s*File "(.+)", line (\d+)', lines[0]) if lines else None
    if header is None:
        return node.kind()
    for k in range(1, len(lines) - 1):
        if lines[k + 1].strip().startswith("~"):
            return f'{header.group(1)}, line {int(header.group(2)) + k - 1}: `{lines[k].strip()[:120]}`'
    return f"{header.group(1)}, line {header.group(2)}"


def reads_tensor_values(cond) -> bool:
    """Whether a condition depends on a tensor's values (not only on its metadata)."""
    seen, stack = set(), [cond]
    while stack:
        value = stack.pop()
        if value.unique() in seen:
            continue
        seen.add(value.unique())
        node = value.node()
        if node.kind() == "prim::Param":
            if _tensorish(value):
                return True
            continue
        metadata = node.kind() in METADATA_OPS
        for inp in node.inputs():
            if _tensorish(inp):
                if not metadata:
                    return True
            else:
                stack.append(inp)
        for block in node.blocks():
            stack.extend(block.outputs())
    return False


def _bind_defaults(graph, schema, given: int) -> None:
    """Optional arguments the example does not give become their declared defaults."""
    args = schema.arguments[1:]  # without self
    for i in reversed(range(given, len(args))):
        if not args[i].has_default_value():
            raise CaptureFailed(
                f"the TorchScript model's forward takes argument {args[i].name!r} with no default, "
                f"but the input spec gives only {given} input(s)"
            )
        const = graph.insertConstant(args[i].default_value)
        const.node().moveBefore(next(iter(graph.nodes())))
        list(graph.inputs())[i].replaceAllUsesWith(const)
        graph.eraseInput(i)


def _attributes_to_inputs(graph) -> None:
    """``self.a.weight`` read through the frozen module's object becomes the parameter input."""
    inputs = {v.debugName(): v for v in graph.inputs()}
    path: dict[int, str] = {}

    def walk(block):
        for node in block.nodes():
            if node.kind() == "prim::CreateObject":
                path[node.output().unique()] = ""
            elif node.kind() == "prim::GetAttr" and node.input().unique() in path:
                root = path[node.input().unique()]
                name = f"{root}.{node.s('name')}" if root else node.s("name")
                path[node.output().unique()] = name
                if name in inputs:
                    node.output().replaceAllUsesWith(inputs[name])
            for sub in node.blocks():
                walk(sub)

    walk(graph)


def _simplify(graph) -> None:
    torch._C._jit_pass_constant_propagation(graph)
    torch._C._jit_pass_dce(graph)


def _decisions(graph) -> list:
    """Top-level ifs, and loops whose trip count is not yet a constant: what a probe decides."""
    out = []
    for node in graph.nodes():
        if node.kind() == "prim::If" or (node.kind() == "prim::Loop" and node.inputsSize() > 1
                                         and node.inputsAt(0).node().kind() != "prim::Constant"):
            out.append(node)
    return out


def _probe(graph, positions: list[int], inputs: tuple) -> tuple:
    """Run a copy of the graph that returns, for the decisions at ``positions``, each if's
    condition and each loop's trip count."""
    probe = graph.copy()
    nodes = _decisions(probe)
    values = [nodes[i].inputsAt(0) for i in positions]
    for i in reversed(range(len(list(probe.outputs())))):
        probe.eraseOutput(i)
    ret = probe.return_node()
    pack = probe.create("prim::TupleConstruct", values)
    pack.output().setType(torch._C.TupleType([v.type() for v in values]))
    pack.insertBefore(ret)
    probe.registerOutput(pack.output())
    fn = torch._C._create_function_from_graph("prunekit_branch_probe", probe)
    with torch.enable_grad():
        return tuple(fn(*inputs))


def prepare_scripted(ts, example: tuple, inputs_at) -> PreparedGraph:
    """The converter's graph for ``ts`` with its constant control flow specialised to ``example``.

    ``inputs_at(batch)`` draws user inputs like the example at another batch size.
    """
    frozen = torch._C._freeze_module(ts._c, preserveParameters=True)
    module, params = torch._C._jit_onnx_list_model_parameters(frozen)
    graph = module._get_method("forward").graph.copy()
    _bind_defaults(graph, ts.forward.schema, len(example))
    _attributes_to_inputs(graph)
    _simplify(graph)
    torch._C._jit_pass_constant_loop_unrolling(graph)
    _simplify(graph)

    trainable = {name for name, _ in ts.named_parameters()}
    names = [v.debugName() for v in list(graph.inputs())[len(example):]]
    probe_params = tuple(p.detach().requires_grad_(name in trainable and p.is_floating_point())
                         for name, p in zip(names, params))
    runs = [tuple(example)] + [tuple(inputs_at(b)) for b in PROBE_BATCHES if b != example[0].shape[0]]
    prepared = PreparedGraph(graph=graph, params=params, module=module)
    for _ in range(MAX_ROUNDS):
        nodes = _decisions(graph)
        static = [i for i, n in enumerate(nodes) if not reads_tensor_values(n.inputsAt(0))]
        if not static:
            break
        taken = _probe(graph, static, runs[0] + probe_params)  # the example must run: it did before
        for other in runs[1:]:
            try:
                seen = _probe(graph, static, other + probe_params)
            except Exception:
                continue  # the upload refuses this batch itself: it need not agree there
            for j, i in enumerate(static):
                if seen[j] != taken[j]:
                    what = "branches" if nodes[i].kind() == "prim::If" else "loops a number of times that depends"
                    raise CaptureFailed(
                        f"the scripted model {what} on its batch size at {source_line(nodes[i])}; "
                        f"specialising it would fix the batch: trace the model with torch.jit.trace "
                        f"at the batch it is used with, or upload a torch.export archive"
                    )
        for j, i in enumerate(static):
            const = graph.insertConstant(taken[j])
            const.node().moveBefore(nodes[i])
            nodes[i].replaceInput(0, const)
        prepared.specialised += sum(nodes[i].kind() == "prim::If" for i in static)
        _simplify(graph)
        torch._C._jit_pass_constant_loop_unrolling(graph)
        _simplify(graph)
    left = _decisions(graph)
    if left:
        what = "branches" if left[0].kind() == "prim::If" else "loops"
        raise CaptureFailed(
            f"the scripted model {what} on tensor values at {source_line(left[0])}; such control flow "
            f"cannot be specialised to an example: trace the model with torch.jit.trace (which records "
            f"the path the example takes), or upload a torch.export archive"
        )
    return prepared


def has_control_flow(ts) -> bool:
    """Whether ``forward`` has ifs or loops, or arguments that are not plain tensors."""
    graph = ts.inlined_graph
    if any(str(a.type) != "Tensor" for a in ts.forward.schema.arguments[1:]):
        return True

    def walk(block):
        return any(n.kind() in ("prim::If", "prim::Loop") or any(walk(b) for b in n.blocks()) for n in block.nodes())

    return walk(graph)
