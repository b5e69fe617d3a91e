"""RFC 5118 IPv6 torture messages, read in place from ../shared/testdata/rfc5118/."""

from __future__ import annotations

import csv
import pathlib

import pytest

from sip.errors import RemoteProtocolError
from sip.message import Request, error_response, parse_message
from sip.uri import SipUri

pytestmark = pytest.mark.twin  # sip.message/uri/grammar have compiled twins

DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc5118"

with open(DIR / "MANIFEST.tsv", newline="") as _f:
    ROWS = list(csv.DictReader(_f, delimiter="\t"))


def _load(name: str) -> Request:
    msg = parse_message((DIR / name).read_bytes())
    assert isinstance(msg, Request)
    return msg


def test_manifest_rows() -> None:
    assert len(ROWS) == 12


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_ipv6_message(row: dict[str, str]) -> None:
    data = (DIR / row["file"]).read_bytes()
    if row["category"] == "invalid":
        with pytest.raises(RemoteProtocolError) as info:
            parse_message(data)
        assert "not enclosed in []" in info.value.message and info.value.status_hint == 400
        resp = error_response(data, info.value)
        assert resp is not None and resp.status_code == 400
        return
    msg = parse_message(data)
    again = parse_message(bytes(msg))
    assert again.headers == msg.headers and again.body == msg.body
    for via in msg.via:
        assert via.host


def test_port_ambiguous_vs_unambiguous() -> None:
    amb = _load("port-ambiguous").uri
    assert isinstance(amb, SipUri) and amb.host == "[2001:db8::10:5070]" and amb.port is None
    una = _load("port-unambiguous").uri
    assert isinstance(una, SipUri) and una.host == "[2001:db8::10]" and una.port == 5070
    assert una.host_unbracketed == "2001:db8::10"


def test_received_with_and_without_brackets() -> None:
    assert _load("via-received-param-with-delim").via[0].received == "2001:db8::9:255"
    assert _load("via-received-param-no-delim").via[0].received == "2001:db8::9:255"


def test_mixed_via_list() -> None:
    vias = _load("mult-ip-in-header").via
    assert [(v.host, v.port) for v in vias] == [("[2001:db8::9:1]", 6050), ("192.0.2.1", None), ("[2001:db8::9:255]", None)]
    assert vias[2].received == "192.0.2.200"


def test_ipv4_mapped_and_three_colon_forms_tolerated() -> None:
    assert _load("ipv4-mapped-ipv6").via[0].host == "[::ffff:192.0.2.10]"
    three = _load("ipv6-bug-abnf-3-colons").uri
    assert isinstance(three, SipUri) and three.host == "[2001:db8:::192.0.2.1]"
