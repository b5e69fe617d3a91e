"""Tests of sip.uri: SIP/SIPS/tel URIs, escaping, IPv6, RFC 3261 §19.1.4 comparison."""

from __future__ import annotations

import pytest

from sip.errors import RemoteProtocolError
from sip.uri import AbsoluteUri, SipUri, TelUri, parse_host_port, parse_uri, unescape

pytestmark = pytest.mark.twin  # sip.message/uri/grammar have compiled twins


def test_full_sip_uri() -> None:
    uri = parse_uri("sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == ("sips", "alice", "secret", "atlanta.example.com", 5061)
    assert uri.params == {"transport": "tcp", "lr": None} and uri.transport == "tcp"
    assert uri.headers == {"subject": "project%20x", "priority": "urgent"}
    assert str(uri) == "sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent"


@pytest.mark.parametrize(
    "text",
    [
        "sip:atlanta.example.com",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice@192.0.2.4",
        "sip:[2001:db8::10]:5070",
        "sip:user;par=u%40example.net@example.com",
        "sip:%61lice@example.com;maddr=239.255.255.1;ttl=15",
    ],
)
def test_roundtrip(text: str) -> None:
    assert str(parse_uri(text)) == text


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp", True),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", True),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5", True),
        ("sip:alice@atlanta.com?subject=project%20x", "sip:alice@atlanta.com?subject=project x".replace(" ", "%20"), True),
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP", False),  # user case differs
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", False),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp", False),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off", False),
    ],
)
def test_rfc3261_comparison_examples(a: str, b: str, equal: bool) -> None:
    assert (parse_uri(a) == parse_uri(b)) is equal


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("sip:2001:db8::10", "not enclosed in []"),
        ("sip:alice@exa mple.com", "contains ' '"),
        ("sip:alice@host:99999", "exceeds 65535"),
        ("sip:alice@300.1.1.1", "out of range"),
        ("sip:alice@-bad-.com", "malformed host"),
        ("sip:alice@host;=x", "malformed URI parameter"),
        ("sip:alice@host?a", "malformed URI header"),
        ("sip:@host", "empty user"),
        ("sip:", "no host"),
        ("nocolon", "no scheme"),
        ("tel:abc-xyz", "malformed telephone number"),
        ("http:", "malformed http URI"),
    ],
)
def test_malformed(text: str, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(text)
    assert fragment in info.value.message


def test_tel_and_absolute() -> None:
    tel = parse_uri("tel:+1-201-555-0123;ext=22")
    assert isinstance(tel, TelUri) and tel.is_global and tel.digits == "+12015550123"
    assert tel == parse_uri("tel:+1.201.555.0123;EXT=22")
    assert str(tel) == "tel:+1-201-555-0123;ext=22"
    other = parse_uri("soap.beep://192.0.2.103:3002")
    assert isinstance(other, AbsoluteUri) and other.scheme == "soap.beep"


def test_unescape_keeps_nul_and_utf8() -> None:
    assert unescape("a%00b") == "a\x00b"
    assert unescape("%C3%A9t%C3%A9") == "été"
    assert unescape("100%") == "100%"


def test_host_port_and_helpers() -> None:
    assert parse_host_port("[::1]:5060") == ("[::1]", 5060)
    assert parse_host_port("example.com") == ("example.com", None)
    uri = parse_uri("sip:Bob%20X@[2001:DB8::1];maddr=x")
    assert isinstance(uri, SipUri)
    assert uri.host_unbracketed == "2001:DB8::1" and uri.aor == "sip:Bob X@[2001:db8::1]"
    assert uri.copy(port=5070).port == 5070 and uri.port is None
    assert uri.param("MADDR") == "x" and uri.has_param("maddr")
