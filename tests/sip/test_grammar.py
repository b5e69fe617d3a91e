"""Tests of sip.grammar lexical helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import RemoteProtocolError
from sip.grammar import format_params, is_token, parse_params, parse_quoted, quote, split_commas, unquote

pytestmark = pytest.mark.twin  # sip.message/uri/grammar have compiled twins


def test_split_commas_respects_quotes_and_angles() -> None:
    value = '"Doe, John" <sip:j@x;a=1,2>;q=0.5, <sip:k@y> ,sip:z@w'
    assert split_commas(value) == ['"Doe, John" <sip:j@x;a=1,2>;q=0.5', "<sip:k@y>", "sip:z@w"]
    assert split_commas('"a\\", b" <sip:x@y>') == ['"a\\", b" <sip:x@y>']
    with pytest.raises(RemoteProtocolError, match="empty element"):
        split_commas("a,,b")
    with pytest.raises(RemoteProtocolError, match="unterminated"):
        split_commas('"open, b')


def test_parse_params_forms() -> None:
    assert parse_params(";branch=z9hG4bK1;rport;received=[2001:db8::9]") == {
        "branch": "z9hG4bK1", "rport": None, "received": "[2001:db8::9]"
    }
    assert parse_params(' ; tag = 12 ;name="a;b\\"c"') == {"tag": "12", "name": '"a;b\\"c"'}
    assert parse_params("") == {}
    for bad, fragment in ((";;", "malformed"), (";a=", "'a' has an empty"), (";a b", "malformed"), (";=x", "malformed")):
        with pytest.raises(RemoteProtocolError, match=fragment):
            parse_params(bad)


def test_quoted_strings() -> None:
    assert parse_quoted('x"a\\"b\\\\c" rest', 1) == ('a"b\\c', 10)
    with pytest.raises(RemoteProtocolError):
        parse_quoted('"never closed', 0)
    assert unquote('"a\\"b"') == 'a"b' and unquote("tok") == "tok" and unquote(None) is None
    assert is_token("INVITE") and is_token("!interesting-Method0123456789_*+`.%indeed'~")
    assert not is_token("a b") and not is_token("")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30))
def test_property_quote_parse_roundtrip(text: str) -> None:
    quoted = quote(text)
    assert parse_quoted(quoted, 0) == (text, len(quoted))
    assert unquote(quoted) == text


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True),
                       st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9.]{1,8}", fullmatch=True)), max_size=5))
def test_property_params_roundtrip(params: dict[str, str | None]) -> None:
    assert parse_params(format_params(params)) == params
