"""Refuse TorchScript archives whose code reaches outside the tensor world.

A TorchScript archive carries its code as Python-syntax source (``code/__torch__/*.py``).
``torch.jit.load`` compiles that source with TorchScript's own compiler: it is not Python, it
cannot import or call Python, but it can call every registered op, and it *runs* code at load
time (a class's ``__setstate__``).  Among the ops, ``aten::from_file`` maps any file of the
server into a tensor (with ``shared=True``, writably) and ``aten::save`` writes one; a crafted
archive could read or overwrite server files on load or when its forward runs.

So the source is audited before ``torch.jit.load`` sees it: Python's parser reads it (parsing
runs nothing) and every name it uses is checked against :mod:`.op_policy`, including names that
only appear as strings (``getattr(torch, "from_file")``, ``getattr(ops, "aten").save``: a
``getattr`` with a literal is read as the attribute it spells).  TorchScript lets a local name
hold a namespace (``a = ops.aten`` then ``a.save(...)``), which no text scan can follow, so an
op root (``torch``, ``ops`` and anything under them) may only be called or have attributes
taken; used as a value it is refused (torch's serializer never writes that).  torchbind classes
(``torch.classes.NS.NAME``: C++ objects the code may build, and that the archive's pickles restore
through their own ``__setstate__`` inside ``torch.jit.load``) must be on
:data:`.op_policy.TORCHBIND_CLASSES`, in the source, in every pickle's ``GLOBAL`` (read by
``pickletools``, which runs nothing) and in the loaded graphs' value types.  After loading, every compiled graph
(all methods of every module, functions inlined) is checked again by op kind, so an op that the
text scan could not see is refused before anything runs the model.
"""

from __future__ import annotations

import ast
import pickletools
import re
import zipfile
from pathlib import Path

from ...errors import InvalidModelFile, LimitExceeded, UnsafeModelFile
from ...limits import Limits
from .op_policy import check_class, check_op, denied_names
from .zip_limits import check_zip, read_member


_ROOTS = ("torch", "ops")
_CLASS_TYPE = re.compile(r"__torch__\.torch\.classes\.(\w+)\.(\w+)")


def _class_at(chain: list[str]) -> int | None:
    """Where ``torch.classes`` starts in a dotted name (``torch.classes.NS.NAME``, or the
    ``__torch__.torch.classes.NS.NAME`` serialized code spells), or ``None``."""
    for i in (0, 1):
        if chain[i:i + 2] == ["torch", "classes"] and (i == 0 or chain[0] == "__torch__"):
            return i
    return None


def _getattr_parts(node: ast.AST) -> "tuple[ast.AST, str] | None":
    """``getattr(X, "name")`` (TorchScript's getattr takes a string literal): ``(X, "name")``."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        return node.args[0], node.args[1].value
    return None


def _dotted(node: ast.AST) -> list[str] | None:
    """The dotted name an expression spells, reading ``getattr(X, "a")`` as ``X.a`` (TorchScript
    resolves both the same way): ``getattr(ops, "aten").save`` is ``ops.aten.save``."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (ga := _getattr_parts(node)) is not None:
            node, name = ga
            parts.append(name)
        else:
            break
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _continues_chain(node: ast.AST, parent: ast.AST | None) -> bool:
    """Whether ``node`` is called, or is the base of a longer name (``node.x``, ``getattr(node, "x")``)."""
    if isinstance(parent, ast.Attribute):
        return parent.value is node
    if isinstance(parent, ast.Call):
        ga = _getattr_parts(parent)
        return parent.func is node or (ga is not None and ga[0] is node)
    return False


def _audit_source(member: str, text: str) -> None:
    try:
        tree = ast.parse(text, filename=member)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise InvalidModelFile(f"the TorchScript archive's {member} is not valid TorchScript source") from None
    denied = denied_names()

    def refuse(why: str, node: ast.AST) -> UnsafeModelFile:
        line = getattr(node, "lineno", "?")
        return UnsafeModelFile(f"the TorchScript archive's {member} (line {line}) {why}; it was not loaded")

    parents: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node

    for node in ast.walk(tree):
        if not isinstance(node, (ast.Attribute, ast.Name, ast.Call)):
            continue
        chain = _dotted(node)
        if not chain or (isinstance(node, ast.Call) and _getattr_parts(node) is None):
            continue
        at = _class_at(chain)
        if at is not None:  # a torchbind class: constructed by code, restored by data.pkl
            if len(chain) >= at + 4:
                why = check_class(chain[at + 2], chain[at + 3])
                if why:
                    raise refuse(f"uses {'.'.join(chain[:at + 4])}: {why}", node)
            elif not _continues_chain(node, parents.get(id(node))):
                raise refuse(f"uses {'.'.join(chain)} as a value (an alias of torchbind classes)", node)
            continue
        if chain[0] not in _ROOTS:
            continue  # self.save, x.from_file: attributes of modules and values, not ops
        shown = ".".join(chain)
        if len(chain) >= 3 and (chain[0] == "ops" or chain[:2] == ["torch", "ops"]):
            ns_at = 1 if chain[0] == "ops" else 2
            if len(chain) > ns_at + 1:
                why = check_op(chain[ns_at], chain[ns_at + 1])
                if why:
                    raise refuse(f"calls {shown}: {why}", node)
        hit = next((p for p in chain[1:] if p in denied), None)
        if hit:
            raise refuse(f"uses {shown}, an op that reaches the file system ({hit})", node)
        if not _continues_chain(node, parents.get(id(node))):
            # `a = ops.aten` binds the namespace to a name (TorchScript keeps it), and `a.save(...)`
            # would reach the op under a name this scan cannot follow: torch never writes that
            raise refuse(f"uses {shown} as a value (an alias of an op namespace or op)", node)


def _audit_pickle(member: str, raw: bytes) -> None:
    """The torchbind classes a TorchScript pickle names (``GLOBAL __torch__.torch.classes.NS
    NAME``): ``torch.jit.load`` builds each and runs its C++ ``__setstate__``.  Python's
    ``pickletools`` only reads the opcodes; torch's unpickler knows no other way to name a class."""
    try:
        for op, arg, _ in pickletools.genops(raw):
            if op.name == "GLOBAL" and isinstance(arg, str):
                m = _CLASS_TYPE.fullmatch(arg.replace(" ", "."))
                why = check_class(m.group(1), m.group(2)) if m else None
                if arg.startswith("__torch__.torch.classes") and (m is None or why):
                    raise UnsafeModelFile(f"the TorchScript archive's {member} restores {arg.replace(' ', '.')[:120]}: "
                                          f"{why or 'not a torchbind class name'}; it was not loaded")
    except (ValueError, EOFError, UnicodeDecodeError):
        raise InvalidModelFile(f"the TorchScript archive's {member} is not a pickle torch writes") from None


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
        for info in infos:
            if info.filename.endswith(".pkl") or info.filename.endswith(".debug_pkl"):
                _audit_pickle(info.filename.split("/", 1)[-1], read_member(zf, info, limits.max_unpacked_bytes))
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
            for value in list(node.inputs()) + list(node.outputs()):
                for cls in _CLASS_TYPE.finditer(str(value.type())):
                    why = check_class(cls.group(1), cls.group(2))
                    if why:
                        raise UnsafeModelFile(f"the TorchScript model's {where} uses {why}; it is not run")
