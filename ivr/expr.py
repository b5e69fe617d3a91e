"""Templates and small expressions over flow variables.

Flows are written by call-centre managers, so two forms only:

* **templates**: text with ``{name}`` placeholders (``"{caller_number}"``,
  ``"Your balance is {acct_balance} euros"``); ``{{`` and ``}}`` are literal
  braces; an unknown name renders as the empty string.
* **expressions**: a Python-like expression over variables, numbers and
  strings with ``+ - * / // %``, comparisons, ``and``/``or``/``not``,
  ``in``, parentheses and ``len()``.  Used by ``branch`` rules (``if =
  "attempts >= 3"``) and by ``set`` values that start with ``=``
  (``count = "= count + 1"``).  Variables holding digit strings compare as
  numbers (``amount > 100`` works on collected digits).

Expressions are parsed once at load (:func:`compile_expression`, raising
``SyntaxError``/``ValueError`` with a message the validator reports) and
evaluated by walking the AST with a whitelist: no attribute access, no calls
other than ``len``, no comprehension, so a flow cannot run code.
"""
from __future__ import annotations

import ast
import operator
import re
from typing import Any, Callable, Mapping

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BAD_BRACE = re.compile(r"\{(?![A-Za-z_][A-Za-z0-9_]*\}|\{)")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: _contains(a, b), ast.NotIn: lambda a, b: not _contains(a, b),
}


def template_names(template: str) -> list[str]:
    """Variable names a template refers to."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)]


def check_template(template: str) -> str | None:
    """Return a reason if the template's braces are malformed, else None."""
    stripped = _PLACEHOLDER.sub("", template)
    if "{" in stripped or "}" in stripped:
        return f"template {template!r} has a stray brace (write {{name}}, or {{{{ for a literal brace)"
    return None


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Substitute ``{name}`` placeholders; unknown names become ``""``."""
    if "{" not in template and "}" not in template:
        return template

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is None:
            return m.group(0)[0]
        value = variables.get(name, "")
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(sub, template)


def _coerce(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value) if "." in value else int(value)
    return value


def _pair(a: Any, b: Any) -> tuple[Any, Any]:
    # A number meets a digit string: compare as numbers ("150" > 100).  Two
    # strings stay strings so "0612" != "612".
    a_num = isinstance(a, int | float) and not isinstance(a, bool)
    b_num = isinstance(b, int | float) and not isinstance(b, bool)
    if a_num and not b_num:
        return a, _coerce(b)
    if b_num and not a_num:
        return _coerce(a), b
    return a, b


def _contains(item: Any, seq: Any) -> bool:
    if isinstance(seq, list):
        return any(operator.eq(*_pair(item, e)) for e in seq)
    return str(item) in str(seq)


class Expression:
    """A compiled, safe expression; call :meth:`evaluate` with the variables."""

    __slots__ = ("source", "_tree", "names")

    def __init__(self, source: str) -> None:
        self.source = source
        tree = ast.parse(source.strip(), mode="eval")
        self.names: set[str] = set()
        self._check(tree.body)
        self._tree = tree.body

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp | ast.Compare | ast.BinOp | ast.UnaryOp):
            if isinstance(node, ast.BinOp) and type(node.op) not in _BINOPS:
                raise ValueError(f"operator {type(node.op).__name__} is not allowed")
            if isinstance(node, ast.Compare):
                for op in node.ops:
                    if type(op) not in _CMPOPS:
                        raise ValueError(f"comparison {type(op).__name__} is not allowed")
            if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
                raise ValueError(f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.Name):
            if node.id not in ("true", "false", "True", "False"):
                self.names.add(node.id)
            return
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, str | int | float | bool):
                raise ValueError(f"constant {node.value!r} is not allowed")
            return
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == "len" and len(node.args) == 1
                    and not node.keywords):
                raise ValueError("only len(x) may be called")
            self._check(node.args[0])
            return
        elif isinstance(node, ast.List | ast.Tuple):
            pass
        elif isinstance(node, ast.expr_context | ast.operator | ast.cmpop | ast.boolop | ast.unaryop):
            return
        else:
            raise ValueError(f"{type(node).__name__} is not allowed in an expression")
        for child in ast.iter_child_nodes(node):
            self._check(child)

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate against ``variables``; unknown names are ``""``.

        Raises ``TypeError``/``ZeroDivisionError`` when the values do not fit
        the operators (the interpreter logs it and treats the rule as false).
        """
        return self._eval(self._tree, variables)

    def _eval(self, node: ast.AST, v: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in ("true", "True"):
                return True
            if node.id in ("false", "False"):
                return False
            return v.get(node.id, "")
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, v), self._eval(node.right, v)
            if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
                return left + right
            # an unset variable counts as 0 in arithmetic ("= count + 1")
            return _BINOPS[type(node.op)](_coerce(left or 0), _coerce(right or 0))
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, v)
            if isinstance(node.op, ast.Not):
                return not operand
            operand = _coerce(operand)
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result: Any = True
                for value in node.values:
                    result = self._eval(value, v)
                    if not result:
                        return result
                return result
            result = False
            for value in node.values:
                result = self._eval(value, v)
                if result:
                    return result
            return result
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, v)
            for op, comparator in zip(node.ops, node.comparators):
                right = self._eval(comparator, v)
                if isinstance(op, ast.In | ast.NotIn):
                    ok = _CMPOPS[type(op)](left, right)
                else:
                    ok = _CMPOPS[type(op)](*_pair(left, right))
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.Call):
            return len(str(v.get(node.args[0].id, "")) if isinstance(node.args[0], ast.Name)
                       else self._eval(node.args[0], v))
        if isinstance(node, ast.List | ast.Tuple):
            return [self._eval(e, v) for e in node.elts]
        raise ValueError(f"cannot evaluate {type(node).__name__}")  # unreachable after _check


def compile_expression(source: str) -> Expression:
    """Parse and vet an expression; raises ``SyntaxError`` or ``ValueError``."""
    return Expression(source)
