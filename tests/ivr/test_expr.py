"""Templates and safe expressions."""
from __future__ import annotations

import pytest

from ivr.expr import check_template, compile_expression, render, template_names


def test_render_and_names():
    assert render("Hi {name}, {{literal}} {unset}!", {"name": "Ann"}) == "Hi Ann, {literal} !"
    assert render("no braces", {}) == "no braces"
    assert render("{n}", {"n": None}) == ""
    assert template_names("{a} and {b_2} {{c}}") == ["a", "b_2"]
    assert check_template("{a} {{ok}}") is None
    assert check_template("{a b}") is not None and check_template("x}") is not None


@pytest.mark.parametrize("source, variables, expected", [
    ("amount > 100", {"amount": "150"}, True),
    ("amount > 100", {"amount": "99"}, False),
    ("a == '0612'", {"a": "612"}, False),            # strings stay strings
    ("a == 612", {"a": "612"}, True),                 # a number meets a digit string
    ("count + 1", {}, 1),                             # unset is 0 in arithmetic
    ("first + ' ' + last", {"first": "A", "last": "B"}, "A B"),
    ("x in ['1', '2']", {"x": "2"}, True),
    ("x in [1, 2]", {"x": "2"}, True),
    ("'12' in caller", {"caller": "0612"}, True),
    ("not vip or len(pin) == 4", {"vip": True, "pin": "1234"}, True),
    ("1 < n <= 3", {"n": "3"}, True),
    ("-n % 7 // 2 * 3 / 1", {"n": "4"}, 3.0),
    ("flag == true", {"flag": True}, True),
])
def test_expressions(source, variables, expected):
    assert compile_expression(source).evaluate(variables) == expected


@pytest.mark.parametrize("source, message", [
    ("__import__('os')", "only len(x) may be called"),
    ("x.__class__", "Attribute is not allowed in an expression"),
    ("[y for y in x]", "ListComp is not allowed in an expression"),
    ("lambda: 1", "Lambda is not allowed in an expression"),
    ("x ** 2", "operator Pow is not allowed"),
    ("x is None", "comparison Is is not allowed"),
    ("~x", "operator Invert is not allowed"),
    ("x[0]", "Subscript is not allowed in an expression"),
    ("b'x'", "constant b'x' is not allowed"),
])
def test_unsafe_expressions_rejected(source, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("*", r"\*")):
        compile_expression(source)


def test_syntax_error_and_runtime_type_error():
    with pytest.raises(SyntaxError):
        compile_expression("a +")
    with pytest.raises(TypeError):
        compile_expression("a < 3").evaluate({"a": "abc"})
