"""A small, safe condition language for `data.rows`, in place of `pandas.DataFrame.eval`.

pandas' eval lets `@name` and attribute chains reach any Python object, so a config
string such as `(x > 0) & (@pd.core.frame.com.builtins.__import__('os').system(...) == 0)`
would run code. A config string must be data, never code: here the condition is parsed
with `ast.parse` and walked node by node over the frame's columns, and only a whitelist
of constructs is accepted - column names (bare, or in backticks like pandas), numbers,
strings, True/False, comparisons (also chained), `and`/`or`/`not` and `&`/`|`/`~`,
arithmetic, and `in` / `not in` a list of values. Everything else is refused with a
message naming the construct, before any of the expression is evaluated.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable, Union

import numpy as np
import pandas as pd

KEY = "`data.rows`"
MAX_LENGTH = 1000
# 2 ** 100_000 is instant; 9 ** 9 ** 9 (a billion digits) would hang a launch
MAX_POWER_BITS = 100_000
EXAMPLE = '"year <= 2022"'

Value = Union[pd.Series, int, float, str, bool]
Scalar = Union[int, float, str, bool]


class RowFilterError(ValueError):
    """A `data.rows` condition that is refused or cannot be evaluated; the message says
    which construct or problem, and quotes the expression."""


_ARITHMETIC: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
_LOGICAL: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.BitAnd: ("&", operator.and_),
    ast.BitOr: ("|", operator.or_),
    ast.And: ("and", operator.and_),
    ast.Or: ("or", operator.or_),
}
_COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_REFUSED_OPERATORS: dict[type, str] = {
    ast.LShift: "bitwise shifts (`<<`) are not allowed",
    ast.RShift: "bitwise shifts (`>>`) are not allowed",
    ast.BitXor: "`^` is not allowed (for 'either but not both' write (a | b) & ~(a & b))",
    ast.MatMult: "`@` is not allowed",
    ast.Is: "`is` is not allowed; use ==",
    ast.IsNot: "`is not` is not allowed; use !=",
}
_REFUSED_NODES: dict[type, str] = {
    ast.Call: "function calls are not allowed",
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts (`value[...]`) are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (`:=`) are not allowed",
    ast.IfExp: "conditional expressions (`a if c else b`) are not allowed",
    ast.Starred: "starred expressions (`*x`) are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: 'set literals are not allowed (after `in`, use a list: site in ["a", "b"])',
    ast.List: "lists are only allowed after `in` / `not in`",
    ast.Tuple: "tuples are only allowed after `in` / `not in`",
    ast.Slice: "slices are not allowed",
    ast.Await: "`await` is not allowed",
    ast.Yield: "`yield` is not allowed",
    ast.YieldFrom: "`yield from` is not allowed",
}


class _Expression:
    """One condition as the user wrote it and as parsed (backticked names replaced by
    placeholders), for quoting pieces of it in messages."""

    def __init__(self, condition: str, frame: pd.DataFrame):
        self.condition = condition
        self.frame = frame
        text, self.backticked = _replace_backticks(condition)
        self.text = text.strip()  # in eval mode a leading space is an "unexpected indent"
        self.tree = _parse(self)

    def fail(self, problem: str, hint: str = "") -> RowFilterError:
        return RowFilterError(f"{KEY}: {problem} in {self.condition!r}" + (f"; {hint}" if hint else ""))

    def show(self, node: ast.AST) -> str:
        """The user's text for `node`, backticks restored."""
        text = ast.get_source_segment(self.text, node) or ast.unparse(node)
        for placeholder, name in self.backticked.items():
            text = text.replace(placeholder, f"`{name}`")
        return f"`{text.strip()}`"

    def columns(self) -> str:
        return ", ".join(map(str, self.frame.columns))


def row_mask(frame: pd.DataFrame, condition: str) -> np.ndarray:
    """True for each row of `frame` where `condition` holds (missing values compare false,
    as in pandas); raises RowFilterError for anything outside the language."""
    if not isinstance(condition, str):
        raise RowFilterError(f"{KEY} must be a condition written as text, e.g. {EXAMPLE}; got {condition!r}")
    if len(condition) > MAX_LENGTH:
        raise RowFilterError(f"{KEY} is {len(condition)} characters long; at most {MAX_LENGTH} are allowed")
    expression = _Expression(condition, frame)
    try:
        _check(expression, expression.tree.body)
        result = _evaluate(expression, expression.tree.body)
    except RecursionError as err:  # the walk recurses once per nesting level
        raise expression.fail("the expression is nested too deeply") from err
    return _as_mask(expression, result)


def _replace_backticks(condition: str) -> tuple[str, dict[str, str]]:
    """(text with each `name` replaced by a plain identifier, {identifier: name}); also
    refuses pandas' `@variable`, which is the door to Python objects."""
    base = "_rowfilter_column"
    while base in condition:  # a placeholder must not collide with anything the user wrote
        base += "_"
    pieces: list[str] = []
    placeholders: dict[str, str] = {}
    position = 0
    while position < len(condition):
        char = condition[position]
        if char in "'\"":
            end = _string_end(condition, position)
            pieces.append(condition[position:end])
            position = end
        elif char == "@":
            raise RowFilterError(
                f"{KEY}: local variables (`@name`) are not allowed; write the value "
                f"itself, e.g. {EXAMPLE}, in {condition!r}"
            )
        elif char == "`":
            close = condition.find("`", position + 1)
            if close < 0:
                raise RowFilterError(f"{KEY}: a backtick opens a column name that is never closed in {condition!r}")
            name = condition[position + 1 : close]
            placeholder = next((p for p, n in placeholders.items() if n == name), f"{base}{len(placeholders)}")
            placeholders[placeholder] = name
            pieces.append(f" {placeholder} ")  # spaces: `a`b must not fuse into one identifier
            position = close + 1
        else:
            pieces.append(char)
            position += 1
    return "".join(pieces), placeholders


def _string_end(text: str, start: int) -> int:
    """Index just past the string literal opening at `start` (the end of text if unclosed;
    the parser then reports it)."""
    quote = text[start] * 3 if text.startswith(text[start] * 3, start) else text[start]
    position = start + len(quote)
    while position < len(text):
        if text[position] == "\\":
            position += 2
        elif text.startswith(quote, position):
            return position + len(quote)
        else:
            position += 1
    return len(text)


def _parse(expression: _Expression) -> ast.Expression:
    try:
        return ast.parse(expression.text, mode="eval")
    except SyntaxError as err:
        raise RowFilterError(
            f"{KEY}: cannot evaluate {expression.condition!r}: not a valid expression ({err.msg})"
        ) from err
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes; absurd nesting
        raise RowFilterError(f"{KEY}: cannot evaluate {expression.condition!r}: {err}") from err


def _check(expression: _Expression, node: ast.AST) -> None:
    """Refuse anything outside the whitelist, before evaluating any part of the expression."""
    if isinstance(node, ast.Name):
        _check_name(expression, node)
    elif isinstance(node, ast.Constant):
        _check_literal(expression, node)
    elif isinstance(node, ast.BinOp):
        _check_operator(expression, node.op, node)
        _check(expression, node.left)
        _check(expression, node.right)
    elif isinstance(node, ast.UnaryOp):
        _check(expression, node.operand)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(expression, value)
    elif isinstance(node, ast.Compare):
        _check_comparison(expression, node)
    else:
        why = _REFUSED_NODES.get(
            type(node),
            "this is not allowed (only columns, numbers, strings, comparisons, and/or/not, arithmetic and `in` lists)",
        )
        raise expression.fail(f"{why}: got {expression.show(node)}")


def _check_name(expression: _Expression, node: ast.Name) -> None:
    if node.id in expression.backticked:
        name = expression.backticked[node.id]
        if name not in expression.frame.columns:
            raise expression.fail(f"`{name}` is not a column (columns: {expression.columns()})")
        return
    if node.id.startswith("__"):
        raise expression.fail(f"names with double underscores are not allowed: got `{node.id}`")
    if node.id not in expression.frame.columns:
        raise expression.fail(
            f"`{node.id}` is not a column (columns: {expression.columns()})",
            "put a name with spaces or odd characters in backticks, and text in quotes",
        )


def _check_literal(expression: _Expression, node: ast.Constant) -> None:
    if not isinstance(node.value, (bool, int, float, str)):
        raise expression.fail(f"values must be numbers, strings, True or False: got {expression.show(node)}")


def _check_operator(expression: _Expression, op: ast.AST, node: ast.AST) -> None:
    if type(op) in _REFUSED_OPERATORS:
        raise expression.fail(f"{_REFUSED_OPERATORS[type(op)]}: got {expression.show(node)}")


def _check_comparison(expression: _Expression, node: ast.Compare) -> None:
    _check(expression, node.left)
    for position, (op, right) in enumerate(zip(node.ops, node.comparators)):
        _check_operator(expression, op, node)
        if isinstance(op, (ast.In, ast.NotIn)):
            _check_value_list(expression, right)
            if position < len(node.ops) - 1:
                raise expression.fail(f"a list after `in` must end the comparison: got {expression.show(node)}")
        else:
            _check(expression, right)


def _check_value_list(expression: _Expression, node: ast.AST) -> None:
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise expression.fail(
            f'`in` needs a list of values on its right, e.g. site in ["a", "b"]: got {expression.show(node)}'
        )
    for element in node.elts:
        if _literal(element) is None:
            raise expression.fail(
                f"the list after `in` may hold only numbers, strings, True or False: got {expression.show(element)}"
            )


def _literal(node: ast.AST) -> Scalar | None:
    """The value of a literal (a signed number counts), or None if `node` is not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
        and not isinstance(node.operand.value, bool)
    ):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    return None


def _evaluate(expression: _Expression, node: ast.AST) -> Value:
    """The value of a checked node: a column as a Series, or a Python scalar."""
    if isinstance(node, ast.Name):
        return _column(expression, expression.backticked.get(node.id, node.id))
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        return _binary(expression, node)
    if isinstance(node, ast.UnaryOp):
        return _unary(expression, node)
    if isinstance(node, ast.BoolOp):
        symbol, combine = _LOGICAL[type(node.op)]
        values = [_condition(expression, value, symbol, node) for value in node.values]
        result = values[0]
        for value in values[1:]:
            result = _apply(expression, node, combine, result, value)
        return result
    if isinstance(node, ast.Compare):
        return _compare(expression, node)
    raise expression.fail(f"cannot evaluate {expression.show(node)}")  # _check let through something new


def _column(expression: _Expression, name: str) -> pd.Series:
    column = expression.frame[name]
    if isinstance(column, pd.DataFrame):
        raise expression.fail(f"the data has more than one column named {name!r}")
    return column


def _binary(expression: _Expression, node: ast.BinOp) -> Value:
    if type(node.op) in _LOGICAL:
        symbol, combine = _LOGICAL[type(node.op)]
        return _apply(
            expression,
            node,
            combine,
            _condition(expression, node.left, symbol, node),
            _condition(expression, node.right, symbol, node),
        )
    symbol, apply = _ARITHMETIC[type(node.op)]
    left = _number(expression, node.left, symbol, node)
    right = _number(expression, node.right, symbol, node)
    if isinstance(node.op, ast.Pow):
        _check_power_size(expression, left, right, node)
    return _apply(expression, node, apply, left, right)


def _unary(expression: _Expression, node: ast.UnaryOp) -> Value:
    if isinstance(node.op, (ast.Not, ast.Invert)):
        symbol = "not" if isinstance(node.op, ast.Not) else "~"
        value = _condition(expression, node.operand, symbol, node)
        return (not value) if isinstance(value, (bool, np.bool_)) else ~value
    symbol, apply = ("-", operator.neg) if isinstance(node.op, ast.USub) else ("+", operator.pos)
    return _apply(expression, node, apply, _number(expression, node.operand, symbol, node))


def _compare(expression: _Expression, node: ast.Compare) -> Value:
    """`a < b <= c` as (a < b) & (b <= c), the way pandas reads a chain."""
    left = _evaluate(expression, node.left)
    links: list[Value] = []
    for op, right_node in zip(node.ops, node.comparators):
        if isinstance(op, (ast.In, ast.NotIn)):  # _check made sure a list ends the chain
            links.append(_membership(left, right_node, negate=isinstance(op, ast.NotIn)))
            break
        right = _evaluate(expression, right_node)
        links.append(_apply(expression, node, _COMPARISONS[type(op)], left, right))
        left = right
    result = links[0]
    for link in links[1:]:
        result = _apply(expression, node, operator.and_, result, link)
    return result


def _membership(value: Value, values_node: ast.AST, negate: bool) -> Value:
    values = [_literal(element) for element in values_node.elts]  # type: ignore[attr-defined]
    if isinstance(value, pd.Series):
        return ~value.isin(values) if negate else value.isin(values)
    return (value in values) != negate


def _condition(expression: _Expression, node: ast.AST, symbol: str, parent: ast.AST) -> Value:
    """The operand of a logical operator, which must be true/false (per row)."""
    value = _evaluate(expression, node)
    if not _is_boolean(value):
        hint = "`&` and `|` bind tighter than comparisons: write (x > 0) & (y < 3)" if symbol in ("&", "|") else ""
        raise expression.fail(
            f"`{symbol}` needs conditions (true/false per row), and {expression.show(node)} "
            f"is not one: got {expression.show(parent)}",
            hint,
        )
    return value


def _number(expression: _Expression, node: ast.AST, symbol: str, parent: ast.AST) -> Value:
    """The operand of arithmetic, which must be numeric (no text, so no string blow-up)."""
    value = _evaluate(expression, node)
    numeric = (
        pd.api.types.is_numeric_dtype(value.dtype) if isinstance(value, pd.Series) else isinstance(value, (int, float))
    )
    if not numeric:
        raise expression.fail(
            f"`{symbol}` needs numbers, and {expression.show(node)} is not numeric: got {expression.show(parent)}"
        )
    return value


def _check_power_size(expression: _Expression, base: Value, exponent: Value, node: ast.AST) -> None:
    """Python ints grow without bound; columns are fixed-width numpy numbers and cannot."""
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if abs(base).bit_length() * exponent > MAX_POWER_BITS:
            raise expression.fail(f"the power {expression.show(node)} is too large to compute")


def _apply(expression: _Expression, node: ast.AST, function: Callable[..., Any], *operands: Value) -> Value:
    try:
        return function(*operands)
    except (TypeError, ValueError, ArithmeticError) as err:  # text vs number, 1 / 0, overflow
        raise expression.fail(f"cannot evaluate {expression.show(node)}: {err}") from err


def _is_boolean(value: Value) -> bool:
    if isinstance(value, pd.Series):
        return pd.api.types.is_bool_dtype(value.dtype)
    return isinstance(value, (bool, np.bool_))


def _as_mask(expression: _Expression, result: Value) -> np.ndarray:
    if not (isinstance(result, pd.Series) and _is_boolean(result)):
        raise RowFilterError(
            f"{KEY} must be a condition on the columns, e.g. {EXAMPLE}; "
            f"{expression.condition!r} does not give true/false per row"
        )
    # nullable columns give pd.NA where a value is missing; pandas' NaN compares false
    return result.fillna(False).to_numpy(dtype=bool)
