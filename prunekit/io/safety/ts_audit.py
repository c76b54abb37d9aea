"""Refuse TorchScript archives whose code reaches outside the tensor world.

A TorchScript archive carries its code as Python-syntax source (``code/__torch__/*.py``).
``torch.jit.load`` compiles that source with TorchScript's own compiler: it is not Python, it
cannot import or call Python, but it can call every registered op, and it *runs* code at load
time (a class's ``__setstate__``).  Among the ops, ``aten::from_file`` maps any file of the
server into a tensor (with ``shared=True``, writably) and ``aten::save`` writes one; a crafted
archive could read or overwrite server files on load or when its forward runs.

So the source is audited before ``torch.jit.load`` sees it: Python's parser reads it (parsing
runs nothing) and every name it uses is checked against :mod:`.op_policy`, including names that
only appear as strings (``getattr(torch, "from_file")``).  After loading, every compiled graph
(all methods of every module, functions inlined) is checked again by op kind, so an op that the
text scan could not see is refused before anything runs the model.
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

from ...errors import InvalidModelFile, LimitExceeded, UnsafeModelFile
from ...limits import Limits
from .op_policy import check_op, denied_names
from .zip_limits import check_zip, read_member


def _dotted(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _audit_source(member: str, text: str) -> None:
    try:
        tree = ast.parse(text, filename=member)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise InvalidModelFile(f"the TorchScript archive's {member} is not valid TorchScript source") from None
    denied = denied_names()

    def refuse(why: str, node: ast.AST) -> UnsafeModelFile:
        line = getattr(node, "lineno", "?")
        return UnsafeModelFile(f"the TorchScript archive's {member} (line {line}) {why}; it was not loaded")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if not chain or chain[0] not in ("torch", "ops"):
                continue  # self.save, x.from_file: attributes of modules and values, not ops
            if len(chain) >= 3 and (chain[0] == "ops" or chain[:2] == ["torch", "ops"]):
                ns_at = 1 if chain[0] == "ops" else 2
                if len(chain) > ns_at + 1:
                    why = check_op(chain[ns_at], chain[ns_at + 1])
                    if why:
                        raise refuse(f"calls {'.'.join(chain)}: {why}", node)
            if node.attr in denied:
                raise refuse(f"uses {'.'.join(chain)}, an op that reaches the file system", node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            # getattr(torch, "from_file"): the op's name as a string
            names = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            root = _dotted(node.args[0]) if node.args else None
            if names and names[0] in denied and root and root[0] in ("torch", "ops"):
                raise refuse(f"looks up {names[0]!r}, an op that reaches the file system", node)


def audit_torchscript_archive(path: "str | Path", limits: Limits) -> None:
    """Check the archive's sizes and every source file in it, before ``torch.jit.load``."""
    infos = check_zip(path, limits)
    sources = [i for i in infos if i.filename.endswith(".py")]
    total = sum(i.file_size for i in sources)
    if total > limits.max_code_bytes:
        raise LimitExceeded(
            f"the TorchScript archive holds {total:,} bytes of code, more than the limit of "
            f"{limits.max_code_bytes:,} (PRUNEKIT_MAX_CODE_BYTES)"
        )
    with zipfile.ZipFile(path) as zf:
        for info in sources:
            member = info.filename.split("/", 1)[-1]
            raw = read_member(zf, info, limits.max_code_bytes)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidModelFile(f"the TorchScript archive's {member} is not UTF-8 text") from None
            _audit_source(member, text)


def _graphs(module) -> "list[tuple[str, object]]":
    import torch

    out = []
    seen: set[int] = set()
    for qual, sub in module.named_modules():
        c = getattr(sub, "_c", None)
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        for name in c._method_names():
            graph = c._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            out.append((f"{qual + '.' if qual else ''}{name}", graph))
    return out


def _nodes(block):
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _nodes(sub)


def audit_torchscript_module(module) -> None:
    """Check every op of every compiled method (after load, before anything runs it)."""
    for where, graph in _graphs(module):
        for node in _nodes(graph):
            kind = node.kind()
            ns, _, name = kind.partition("::")
            why = check_op(ns, name)
            if why:
                raise UnsafeModelFile(f"the TorchScript model's {where} calls {kind}: {why}; it is not run")
