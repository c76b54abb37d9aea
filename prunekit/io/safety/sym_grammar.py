"""Strict grammars for the two kinds of expression text a ``.pt2`` archive carries.

torch hands an archive's symbolic sizes (``expr_str``) to ``sympy.sympify``, which *evaluates*
the text as Python, and turns its ``guards_code`` into Python source that it ``exec``s when the
program is turned into a module.  Either runs code from the upload unless the text is known to
be harmless first.  Both are parsed here with Python's parser (parsing runs nothing) and every
node of the tree is checked against what torch itself writes:

* symbolic expressions: calls of sympy's and ``torch.utils._sympy``'s expression classes
  (``Mul(Integer(2), Symbol('s77', positive=True, integer=True))``), or infix arithmetic on
  symbols (``2*s0 + 1``), with literal numbers and symbol names only;
* guards: comparisons and arithmetic over ``L['x'].size()[0]``-style input sizes.

Anything else (attribute access, other names, strings that are not symbol names, lambdas,
huge literals) is refused.
"""

from __future__ import annotations

import ast
import re

MAX_EXPR_CHARS = 20_000
MAX_INT_DIGITS = 40

SYMBOL_NAME = re.compile(r"[a-z]{1,8}[0-9]{0,12}")
_ASSUMPTIONS = frozenset({
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero",
    "nonzero", "even", "odd", "rational", "commutative", "extended_real",
})
# Expression classes torch's serializer writes (sympy's core and torch.utils._sympy.functions).
EXPR_FUNCS = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan",
    "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "Piecewise", "ITE",
    "Tuple", "NegativeOne", "One", "Zero", "Half", "Infinity", "NegativeInfinity", "IntInfinity",
    "NegativeIntInfinity", "BooleanTrue", "BooleanFalse",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity", "OpaqueUnaryFn_sqrt",
})
EXPR_CONSTANTS = frozenset({"oo", "zoo", "nan", "true", "false", "True", "False", "int_oo", "pi", "E"})

_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_COMPARE = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_UNARY = (ast.USub, ast.UAdd, ast.Not)


class Refused(ValueError):
    """The text is outside the grammar; the message says where."""


def _parse(text: object, what: str) -> ast.AST:
    if not isinstance(text, str):
        raise Refused(f"{what} is not text")
    if len(text) > MAX_EXPR_CHARS:
        raise Refused(f"{what} is longer than {MAX_EXPR_CHARS} characters")
    if any(c in text for c in "\"\\\n\r\x00;@`$"):
        raise Refused(f"{what} holds characters no expression has")
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise Refused(f"{what} is not an expression") from None


def _number(node: ast.Constant, what: str) -> None:
    v = node.value
    if isinstance(v, bool) or isinstance(v, float):
        return
    if isinstance(v, int):
        if len(str(abs(v))) > MAX_INT_DIGITS:
            raise Refused(f"{what} holds an integer of more than {MAX_INT_DIGITS} digits")
        return
    raise Refused(f"{what} holds a literal that is not a number: {v!r}"[:200])


def _small_exponent(node: ast.AST, what: str) -> None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" and node.args:
        node = node.args[0]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and abs(node.value) > 64:
        raise Refused(f"{what} raises to a power above 64")


def _arithmetic(node: ast.AST, what: str, visit) -> bool:
    """The part both grammars share: literal numbers, arithmetic, comparisons, and/or/not.
    Checks ``node`` (recursing through ``visit``) and returns True if it is one of these."""
    if isinstance(node, ast.Expression):
        visit(node.body)
    elif isinstance(node, ast.Constant):
        _number(node, what)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _ARITH):
        if isinstance(node.op, ast.Pow):
            _small_exponent(node.right, what)
        visit(node.left)
        visit(node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY):
        visit(node.operand)
    elif isinstance(node, ast.Compare) and all(isinstance(o, _COMPARE) for o in node.ops):
        for child in (node.left, *node.comparators):
            visit(child)
    elif isinstance(node, ast.BoolOp):
        for child in node.values:
            visit(child)
    else:
        return False
    return True


def check_sym_expr(text: object, what: str = "symbolic expression") -> None:
    """Raise :class:`Refused` unless ``text`` is a symbolic size torch could have written."""
    tree = _parse(text, what)

    def visit(node: ast.AST) -> None:
        if _arithmetic(node, what, visit):
            pass
        elif isinstance(node, ast.Name):
            if not (node.id in EXPR_CONSTANTS or node.id in EXPR_FUNCS or SYMBOL_NAME.fullmatch(node.id)):
                raise Refused(f"{what} names {node.id!r}, which is not a symbol")
        elif isinstance(node, ast.Tuple):
            for child in node.elts:
                visit(child)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in EXPR_FUNCS:
            fn = node.func.id
            if fn in ("Pow", "PowByNatural", "FloatPow") and len(node.args) == 2:
                _small_exponent(node.args[1], what)
            for i, arg in enumerate(node.args):
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if not ((fn == "Symbol" and i == 0 and SYMBOL_NAME.fullmatch(arg.value))
                            or (fn == "Float" and i == 0 and re.fullmatch(r"-?[0-9.eE+-]{1,40}|[+-]?inf|nan", arg.value))):
                        raise Refused(f"{what} passes the text {arg.value[:40]!r} to {fn}")
                else:
                    visit(arg)
            for kw in node.keywords:
                if kw.arg == "precision" and isinstance(kw.value, ast.Constant) and type(kw.value.value) is int:
                    continue
                if kw.arg not in _ASSUMPTIONS or not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool)):
                    raise Refused(f"{what} passes {kw.arg}= to {fn}")
        else:
            raise Refused(f"{what} holds a {type(node).__name__}, which no symbolic size has")

    visit(tree)


_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_FUNCS = frozenset({"max", "min", "abs", "int", "float", "Max", "Min"})
_GUARD_MATH = frozenset({"ceil", "floor", "trunc", "sqrt"})
INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")


def check_guard(text: object, what: str = "guard") -> None:
    """Raise :class:`Refused` unless ``text`` is a shape guard of the form torch writes
    (``L['x'].size()[0] <= 65536``, ``2 <= L['x'].size()[0]``, ``L['x'].size()[1] % 8 == 0``)."""
    tree = _parse(text, what)

    def input_ref(node: ast.AST) -> bool:  # L['x'] or L['x'][0] (nested inputs)
        if not isinstance(node, ast.Subscript):
            return False
        if isinstance(node.value, ast.Name) and node.value.id == "L":
            s = node.slice
            return isinstance(s, ast.Constant) and isinstance(s.value, str) and bool(INPUT_NAME.fullmatch(s.value))
        s = node.slice
        return input_ref(node.value) and isinstance(s, ast.Constant) and type(s.value) in (int, str) and (
            type(s.value) is int or bool(INPUT_NAME.fullmatch(s.value)))

    def visit(node: ast.AST) -> None:
        if _arithmetic(node, what, visit):
            pass
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and type(node.slice.value) is int:
            call = node.value  # L['x'].size()[0]
            if not (isinstance(call, ast.Call) and not call.args and not call.keywords
                    and isinstance(call.func, ast.Attribute) and call.func.attr in ("size", "stride")
                    and input_ref(call.func.value)):
                raise Refused(f"{what} indexes something that is not an input's size")
        elif isinstance(node, ast.Call) and not node.keywords:
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in _GUARD_METHODS and not node.args and input_ref(f.value):
                return
            if isinstance(f, ast.Name) and f.id in _GUARD_FUNCS:
                pass
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math" and f.attr in _GUARD_MATH:
                pass
            else:
                raise Refused(f"{what} calls something that is not a size function")
            for arg in node.args:
                visit(arg)
        else:
            raise Refused(f"{what} holds a {type(node).__name__}, which no shape guard has")

    visit(tree)
