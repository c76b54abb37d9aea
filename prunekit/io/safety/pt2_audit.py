"""Audit every string of a ``torch.export`` archive that torch would parse, before torch sees it.

``torch.export.load`` reads the archive's JSON and hands some of its strings to parsers that run
code: symbolic sizes go to ``sympy.sympify`` (Python ``eval``), ``guards_code`` becomes Python
source that is ``exec``ed when the program is made a module, node targets and ``source_fn_stack``
entries are resolved by ``getattr`` chains from ``torch``, and pickled constants would be
unpickled.  This pass reads the same JSON with Python's ``json`` module (which runs nothing) and
checks each string by what it is:

============================= ==========================================================
``expr_str``                  :func:`~.sym_grammar.check_sym_expr`
``guards_code``               :func:`~.sym_grammar.check_guard`
node ``target``, operators    :func:`~.op_policy.check_target` (tensor ops only)
``range_constraints``         symbol names and integer bounds
node metadata                 a grammar per field (module paths, op names, JSON text)
``stack_trace``, op string    free text: stored or passed as a value, never parsed
arguments (``as_string``)
value names (``name``,        Python identifiers: fx writes them into the source it ``exec``s (a
``as_name``)                  placeholder's name becomes a parameter of ``def forward``)
custom objects                refused (they are torchbind classes restored by pickle)
pytree ``context``, custom   JSON text holding user data (dict keys): must decode, strings free
everything else               names: no quotes, backslashes or control characters, no dunders
============================= ==========================================================

Free text may hold newlines but no other line break (``\r`` ends a line of Python source too, so
a stack trace printed into a comment of generated code could not break out of it).  Anything
outside is refused as ``unsafe_model_file``, naming the member and the JSON path.  Before any of
this, :func:`~.pt2_layout.check_pt2_layout` refuses members that are code (AOTInductor libraries)
and :func:`~.pt2_payloads.check_pt2_payloads` refuses stored tensors declared larger than their bytes.
"""

from __future__ import annotations

import json
import keyword
import re
import zipfile
from pathlib import Path

from ...errors import InvalidModelFile, UnsafeModelFile
from ...limits import Limits
from .op_policy import check_target
from .pt2_layout import check_pt2_layout
from .pt2_payloads import MAX_RANK, check_pt2_payloads
from .sym_grammar import SYMBOL_NAME, Refused, check_guard, check_sym_expr
from .zip_limits import check_zip, read_member

MAX_FREE_TEXT = 1 << 20
# Names (parameter paths, node names, types): a ModuleDict key may hold almost anything, but no
# quote, backslash or control character (fx writes names into generated source as string literals).
PLAIN = re.compile(r"[^\"'\\\x00-\x1f\x7f]{0,4096}")
DUNDER = re.compile(r"(^|[.\[])__\w*__($|[.\]])")
DOTTED = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
TORCH_FN = re.compile(r"[\w.;<> \-]{0,4096}")
FREE_TEXT_KEYS = frozenset({"stack_trace", "as_string", "as_strings"})
# Graph values' names (not a node input's schema-argument name): fx generates Python source from
# them and execs it.
IDENTIFIER_KEYS = frozenset({"name", "as_name"})
# Every line break Python's str.splitlines knows, but "\n": none belongs in a stack trace.
LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
JSON_TEXT_KEYS = frozenset({"from_node", "in_spec", "out_spec"})
# JSON text whose strings are user data that torch only decodes (a pytree node's dict keys, a
# node's custom metadata): it must be JSON, its strings are free.
JSON_DATA_KEYS = frozenset({"context", "custom"})
ST_DELIMITER = ";"
# A tensor's sizes and strides: a value of rank 100,000 took torch 20 s to deserialize.
RANKED_KEYS = frozenset({"sizes", "strides"})


def _fail(member: str, why: str) -> UnsafeModelFile:
    return UnsafeModelFile(f"the export archive's {member} is refused ({why}); nothing in it was run")


class _Walker:
    def __init__(self, member: str) -> None:
        self.member = member

    def string(self, key: str | None, value: str, path: str, parent: dict | None) -> None:
        if key == "expr_str":
            check_sym_expr(value, "the symbolic expression")
        elif key == "target" and parent is not None and "inputs" in parent and "outputs" in parent:
            why = check_target(value)
            if why:
                raise Refused(why)
        elif key == "as_operator":
            why = check_target(value)
            if why:
                raise Refused(why)
        elif key in FREE_TEXT_KEYS:
            if len(value) > MAX_FREE_TEXT:
                raise Refused(f"{key} is longer than {MAX_FREE_TEXT} characters")
            if LINE_BREAKS.search(value):
                raise Refused(f"{key} holds a line break other than newline")
        elif key in IDENTIFIER_KEYS and parent is not None and not ("arg" in parent and "kind" in parent):
            # (a node input's "name" is its schema argument's name: torch matches it against the
            # schema and ignores the rest, so it only has to be plain)
            if not value.isidentifier() or keyword.iskeyword(value) or DUNDER.search(value):
                shown = value if len(value) <= 60 else value[:57] + "..."
                raise Refused(f"the value name {shown!r} is not a Python identifier")
        elif key in JSON_DATA_KEYS:
            if len(value) > MAX_FREE_TEXT:
                raise Refused(f"{key} is longer than {MAX_FREE_TEXT} characters")
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                raise Refused(f"{key} is not JSON") from None
        elif key in JSON_TEXT_KEYS:
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                raise Refused(f"{key} is not JSON") from None
            # a JSON value inside JSON: its strings are plain names like any other
            self.walk(json.loads(value), f"{path}(json)", key=None)
        elif key == "nn_module_stack":
            for item in value.split(ST_DELIMITER):
                if not all(PLAIN.fullmatch(p) for p in item.split(",")):  # stored, never parsed
                    raise Refused("nn_module_stack holds characters no module path or type name has")
        elif key == "source_fn_stack":
            for item in value.split(ST_DELIMITER):
                name, _, fn = item.partition(",")
                if not PLAIN.fullmatch(name) or not DOTTED.fullmatch(fn) or DUNDER.search(fn):
                    raise Refused("source_fn_stack names something that is not a module or function path")
        elif key == "torch_fn":
            if not TORCH_FN.fullmatch(value):
                raise Refused("torch_fn holds characters no function name has")
        else:
            self.plain(value, key)

    @staticmethod
    def plain(value: str, key: str | None) -> None:
        if not PLAIN.fullmatch(value) or DUNDER.search(value):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise Refused(f"{key or 'a key'} holds {shown!r}, which is not a name")

    def walk(self, obj: object, path: str, key: str | None = None, parent: dict | None = None) -> None:
        if isinstance(obj, dict):
            if key == "range_constraints":
                self.ranges(obj)
                return
            if "as_custom_obj" in obj or "class_fqn" in obj:
                raise Refused(f"at {path}: the graph holds a custom (torchbind) object, which is restored by unpickling")
            for k, v in obj.items():
                self.plain(k, "a key")
                if k == "guards_code":
                    for i, g in enumerate(v if isinstance(v, list) else [v]):
                        check_guard(g, f"guard {i}")
                else:
                    self.walk(v, f"{path}/{k}", k, obj)
        elif isinstance(obj, list):
            if key in RANKED_KEYS and len(obj) > MAX_RANK:
                raise Refused(f"at {path}: {len(obj):,} {key}, more than the {MAX_RANK} dimensions a tensor may have here")
            for i, v in enumerate(obj):
                self.walk(v, f"{path}[{i}]", key, parent)
        elif isinstance(obj, str):
            try:
                self.string(key, obj, path, parent)
            except Refused as exc:
                raise Refused(f"at {path}: {exc}") from None
        elif not (obj is None or isinstance(obj, (bool, int, float))):
            raise Refused(f"at {path}: unexpected JSON value {type(obj).__name__}")

    def ranges(self, obj: dict) -> None:
        for name, bounds in obj.items():
            if not SYMBOL_NAME.fullmatch(name):  # a derived dim's key is an expression: 2*s39
                try:
                    check_sym_expr(name, "a range constraint's key")
                except Refused:
                    raise Refused(f"range constraint for {name[:40]!r}, which is neither a symbol nor a size expression") from None
            if not isinstance(bounds, dict):
                raise Refused("a range constraint is not a mapping")
            for k, v in bounds.items():
                if k not in ("min_val", "max_val") or not (v is None or type(v) is int or v in ("inf", "-inf", "int_oo", "-int_oo")):
                    raise Refused(f"range constraint {name}.{k} is not an integer bound")


def audit_export_archive(path: "str | Path", limits: Limits) -> None:
    """Raise ``UnsafeModelFile`` / ``InvalidModelFile`` / ``LimitExceeded`` unless every JSON
    member of the ``.pt2`` archive at ``path`` is within its grammar."""
    infos = check_zip(path, limits)
    check_pt2_layout(infos)
    with zipfile.ZipFile(path) as zf:
        check_pt2_payloads(zf, infos, Path(path).stat().st_size, limits)
        for info in infos:
            name = info.filename
            if not name.endswith(".json"):
                continue
            member = name.split("/", 1)[-1]
            raw = read_member(zf, info, limits.max_unpacked_bytes)
            try:
                doc = json.loads(raw)
            except (ValueError, RecursionError):
                raise InvalidModelFile(f"the export archive's {member} is not valid JSON") from None
            walker = _Walker(member)
            try:
                walker.walk(doc, "")
            except Refused as exc:
                raise _fail(member, str(exc)) from None
            except RecursionError:
                raise InvalidModelFile(f"the export archive's {member} is nested too deeply") from None
