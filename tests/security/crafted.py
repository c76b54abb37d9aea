"""Hostile model files, built by the tests from honest ones (nothing here is checked in as bytes).

Each builder writes a file the way an attacker would: start from what ``torch.export.save`` or
``torch.jit.save`` writes, then edit the archive's JSON or source text.  Each payload, if torch
ran it, would create ``marker`` (a file in the test's temporary folder), so a test can tell
"refused" from "ran and failed later".
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable, Tuple

import torch
import torch.nn as nn


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


class Stateful(nn.Module):
    """A module with ``__getstate__``/``__setstate__``: ``torch.jit.load`` runs its ``__setstate__``
    while it loads the archive, before any audit of the loaded module could look at it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    @torch.jit.export
    def __getstate__(self) -> Tuple[bool, torch.Tensor]:
        return (self.training, self.scale)

    @torch.jit.export
    def __setstate__(self, state: Tuple[bool, torch.Tensor]) -> None:
        self.training = state[0]
        self.scale = state[1]


SPEC = {"ratio": 0.5, "inputs": [{"shape": [2, 3, 16, 16]}]}


def honest_pt2(path: Path) -> Path:
    ep = torch.export.export(Small().eval(), (torch.randn(2, 3, 16, 16),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},), strict=False)
    torch.export.save(ep, str(path))
    return path


def honest_ts(path: Path) -> Path:
    torch.jit.script(Small().eval()).save(str(path))
    return path


def honest_stateful_ts(path: Path) -> Path:
    torch.jit.script(Stateful().eval()).save(str(path))
    return path


def rewrite_zip(src: Path, dst: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))
    return dst


def edit_model_json(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    def apply(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            doc = json.loads(data)
            edit(doc)
            return json.dumps(doc).encode()
        return data

    return rewrite_zip(src, dst, apply)


def shell(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def quoteless(marker: Path) -> str:
    """The same command as an expression with no quote, no backslash and no dunder: reachable
    from the names fx puts in scope of the code it generates (``torch`` imports ``os``)."""
    chars = "+".join(f"chr({ord(c)})" for c in f"touch {marker}")
    return f"torch.os.system({chars})"


def _first_node(doc: dict, op: str) -> dict:
    return next(n for n in doc["graph_module"]["graph"]["nodes"] if op in n["target"])


# -- .pt2 payloads: each returns an edit of model.json ------------------------------------------


def pt2_payloads(marker: Path) -> dict[str, Callable[[dict], None]]:
    code = shell(marker)

    def sym_size(doc: dict) -> None:  # the reported attack: sympify evaluates expr_str
        for tv in doc["graph_module"]["graph"]["tensor_values"].values():
            for d in tv["sizes"]:
                if "as_expr" in d:
                    d["as_expr"]["expr_str"] = f"{code}+s77"
                    return
        raise AssertionError("no symbolic size to replace")

    def _strides(doc: dict) -> list:  # symbolic sizes other than the first
        return [d for tv in doc["graph_module"]["graph"]["tensor_values"].values()
                for d in tv["sizes"] if "as_expr" in d][1:]

    def other_size(doc: dict) -> None:
        _strides(doc)[0]["as_expr"]["expr_str"] = f"Symbol('s77', positive=True) + {code}"

    def sympy_attribute(doc: dict) -> None:  # no call, but an attribute walk out of sympy
        _strides(doc)[0]["as_expr"]["expr_str"] = "Symbol.__init__.__globals__"

    def sympy_lambda(doc: dict) -> None:
        _strides(doc)[0]["as_expr"]["expr_str"] = "(lambda: 0)()"

    def guards(doc: dict) -> None:  # exec'd by ExportedProgram.module()
        doc["guards_code"] = [f"{code} == 0"]

    def guard_string_escape(doc: dict) -> None:  # breaks out of the "Guard failed: ..." literal
        doc["guards_code"] = ['L[\'x\'].size()[0] == 2 or ""); ' + code + '; ("']

    def range_constraint(doc: dict) -> None:
        doc["range_constraints"][f"{code}"] = {"min_val": 0, "max_val": None}

    def file_op(doc: dict) -> None:  # a node that maps a server file into a tensor
        _first_node(doc, "conv2d")["target"] = "torch.ops.aten.from_file.default"

    def save_op(doc: dict) -> None:
        _first_node(doc, "conv2d")["target"] = "torch.ops.aten.save.default"

    def torch_function(doc: dict) -> None:  # getattr chains from torch reach any function
        _first_node(doc, "conv2d")["target"] = "torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch"

    def foreign_namespace(doc: dict) -> None:
        _first_node(doc, "conv2d")["target"] = "torch.ops._c10d_functional.all_reduce.default"

    def source_fn(doc: dict) -> None:
        _first_node(doc, "conv2d")["metadata"]["source_fn_stack"] = f"conv,{code}"

    def module_stack(doc: dict) -> None:
        _first_node(doc, "conv2d")["metadata"]["nn_module_stack"] = f'L__self__,"{code}",x'

    def custom_object(doc: dict) -> None:
        node = _first_node(doc, "conv2d")
        node["inputs"][0]["arg"] = {"as_custom_obj": {"name": "obj", "class_fqn": "__torch__.torch.classes.evil.Evil"}}

    def parameter_name(doc: dict) -> None:
        spec = next(s for s in doc["graph_module"]["signature"]["input_specs"] if "parameter" in s)
        spec["parameter"]["parameter_name"] = "__class__.__init__"

    def input_name(doc: dict) -> None:  # becomes `def forward(self, x=<code>)`: run at exec time
        _rename_value(doc, "x", f"x={quoteless(marker)}")

    def output_name(doc: dict) -> None:
        node = _first_node(doc, "conv2d")
        _rename_value(doc, node["outputs"][0]["as_tensor"]["name"], f"conv2d;{quoteless(marker)};conv2d")

    def stack_trace_line_break(doc: dict) -> None:  # \r ends a line of Python source
        _first_node(doc, "conv2d")["metadata"]["stack_trace"] = (
            f'File "m.py", line 1, in forward\n    x\r{quoteless(marker)}\n')

    return {k: v for k, v in locals().items() if callable(v) and not k.startswith("_")}


def _rename_value(doc: dict, old: str, new: str) -> None:
    """Rename a graph value everywhere it is named (as torch.export.save would have written it)."""
    def walk(obj: object) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "name" and v == old and "arg" not in obj:
                    obj[k] = new
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
    walk(doc["graph_module"])
    values = doc["graph_module"]["graph"]["tensor_values"]
    if old in values:
        values[new] = values.pop(old)


# -- TorchScript payloads: each returns an edit of the top module's source ------------------------


def ts_payloads(marker: Path) -> dict[str, Callable[[str], str]]:
    target = str(marker)

    def forward_reads_a_file(src: str) -> str:
        return src.replace("    x: Tensor) -> Tensor:\n",
                           f"    x: Tensor) -> Tensor:\n    _s = torch.from_file(\"/etc/passwd\", False, 4, dtype=0)\n", 1)

    def forward_writes_a_file(src: str) -> str:
        return src.replace("    x: Tensor) -> Tensor:\n",
                           f"    x: Tensor) -> Tensor:\n    _s = torch.save([x], \"{target}\")\n", 1)

    def aten_namespace(src: str) -> str:
        return src.replace("    x: Tensor) -> Tensor:\n",
                           f"    x: Tensor) -> Tensor:\n    _s = ops.aten.from_file(\"{target}\", True, 4)\n", 1)

    def getattr_by_string(src: str) -> str:
        return src.replace("    x: Tensor) -> Tensor:\n",
                           f"    x: Tensor) -> Tensor:\n    _f = getattr(torch, \"from_file\")\n", 1)

    def foreign_op_namespace(src: str) -> str:
        return src.replace("    x: Tensor) -> Tensor:\n",
                           "    x: Tensor) -> Tensor:\n    _s = ops._c10d_functional.wait_tensor(x)\n", 1)

    def setstate_at_load(src: str) -> str:  # __setstate__ runs inside torch.jit.load
        return src.replace("  def forward(", (
            "  def __setstate__(self, state: Tuple[bool]) -> NoneType:\n"
            f"    _t = torch.from_file(\"{target}\", True, 4, dtype=0)\n"
            "    return None\n"
            "  def forward("), 1)

    return {k: v for k, v in locals().items() if callable(v) and k != "target"}


def edit_ts_source(src: Path, dst: Path, edit: Callable[[str], str]) -> Path:
    def apply(name: str, data: bytes) -> bytes:
        if name.endswith(".py") and b"class Small(Module)" in data:
            out = edit(data.decode())
            assert out != data.decode(), "the payload did not apply"
            return out.encode()
        return data

    return rewrite_zip(src, dst, apply)


# -- TorchScript payloads in __setstate__ (run by torch.jit.load itself), each a line of source ----


def setstate_payloads(marker: Path) -> dict[str, str]:
    """Each writes ``marker`` with ``aten::save`` while the archive loads, reaching the op by a
    different spelling of its name."""
    m = str(marker)
    return {
        "direct": f'_t = torch.save([1], "{m}")',  # the spelling the scan always knew
        "getattr_namespace": f'_t = getattr(ops, "aten").save([1], "{m}")',
        "getattr_nested": f'_t = getattr(getattr(ops, "aten"), "save")([1], "{m}")',
        "namespace_alias": f'_a = ops.aten\n    _t = _a.save([1], "{m}")',
        "torch_alias": f'_a = torch\n    _t = _a.save([1], "{m}")',
        "autograd_alias": f'_a = torch.autograd\n    _t = _a.save([1], "{m}")',
    }


def edit_setstate(src: Path, dst: Path, line: str) -> Path:
    anchor = "    self.scale = (state)[1]\n"

    def apply(name: str, data: bytes) -> bytes:
        if name.endswith(".py") and b"class Stateful(Module)" in data:
            text = data.decode()
            assert anchor in text, "the payload did not apply"
            return text.replace(anchor, anchor + f"    {line}\n", 1).encode()
        return data

    return rewrite_zip(src, dst, apply)
