"""Tests of sip.auth: known vectors (RFC 2617 §3.5, RFC 7616 §3.9.1) and round trips."""

from __future__ import annotations

import pytest

from sip.auth import (
    AuthOutcome,
    DigestClient,
    DigestServer,
    compute_ha1,
    digest_response,
    parse_auth_header,
)
from sip.errors import RemoteProtocolError
from sip.message import Headers

# RFC 7616 §3.9.1
R7616 = dict(
    username="Mufasa",
    password="Circle of Life",
    realm="http-auth@example.org",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    uri="/dir/index.html",
    method="GET",
)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    v = R7616
    ha1 = compute_ha1(algorithm, v["username"], v["realm"], v["password"])
    got = digest_response(
        algorithm=algorithm, ha1=ha1, nonce=v["nonce"], method=v["method"], uri=v["uri"],
        qop="auth", nc="00000001", cnonce=v["cnonce"],
    )
    assert got == expected


def test_rfc2617_vector() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    got = digest_response(
        algorithm="MD5", ha1=ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", method="GET",
        uri="/dir/index.html", qop="auth", nc="00000001", cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_client_reproduces_rfc7616_header() -> None:
    challenge = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    md5 = challenge.replace("SHA-256", "MD5")
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: R7616["cnonce"])
    value = client.answer([md5, challenge], "GET", "/dir/index.html")  # picks SHA-256
    scheme, p = parse_auth_header(value)
    assert scheme == "Digest" and p["algorithm"] == "SHA-256" and p["nc"] == "00000001"
    assert p["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert p["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    again = parse_auth_header(client.answer([challenge], "GET", "/dir/index.html"))[1]
    assert again["nc"] == "00000002"


def test_parse_auth_header_quotes_commas_and_errors() -> None:
    scheme, p = parse_auth_header('Digest realm="a, \\"b\\"", nonce=xyz,qop="auth"')
    assert scheme == "Digest" and p == {"realm": 'a, "b"', "nonce": "xyz", "qop": "auth"}
    for bad in ('Digest realm="open', "Digest realm", 'Digest a=1, a=2'):
        with pytest.raises(RemoteProtocolError):
            parse_auth_header(bad)


@pytest.fixture
def server() -> DigestServer:
    return DigestServer("pbx.example.com", b"k" * 32, nonce_lifetime_s=60, algorithms=("SHA-512-256", "SHA-256", "MD5"))


def _creds(server: DigestServer, now: float, algorithm: str = "SHA-256", password: str = "pw", **kw: str) -> str:
    lines = [v for _, v in server.challenge(now)]
    chosen = [v for v in lines if f"algorithm={algorithm}" in v]
    return DigestClient("1001", password, **kw).answer(chosen, "REGISTER", "sip:pbx.example.com")  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "SHA-512-256"])
def test_round_trip_each_algorithm(server: DigestServer, algorithm: str) -> None:
    creds = _creds(server, 100.0, algorithm)
    result = server.verify("REGISTER", creds, 101.0, password="pw")
    assert result.ok and result.username == "1001"
    ha1 = compute_ha1(algorithm, "1001", "pbx.example.com", "pw")
    assert server.verify("REGISTER", _creds(server, 100.0, algorithm), 101.0, ha1_lookup=lambda u, r, a: ha1).ok


def test_challenge_lists_strongest_first_with_one_nonce(server: DigestServer) -> None:
    lines = server.challenge(0.0, proxy=True)
    assert [name for name, _ in lines] == ["Proxy-Authenticate"] * 3
    algs = [parse_auth_header(v)[1]["algorithm"] for _, v in lines]
    assert algs == ["SHA-512-256", "SHA-256", "MD5"]
    assert len({parse_auth_header(v)[1]["nonce"] for _, v in lines}) == 1
    assert "stale=true" in server.challenge(0.0, stale=True)[0][1]


def test_wrong_password_and_unknown_user(server: DigestServer) -> None:
    r = server.verify("REGISTER", _creds(server, 0.0, password="nope"), 1.0, password="pw")
    assert r.outcome is AuthOutcome.REJECTED and "password" in r.reason
    r = server.verify("REGISTER", _creds(server, 0.0), 1.0, ha1_lookup=lambda u, realm, a: None)
    assert r.outcome is AuthOutcome.REJECTED and "unknown user" in r.reason


def test_stale_nonce(server: DigestServer) -> None:
    creds = _creds(server, 0.0)
    assert server.verify("REGISTER", creds, 61.0, password="pw").outcome is AuthOutcome.STALE
    # a stale nonce with a wrong password is a plain rejection, not stale
    bad = _creds(server, 0.0, password="nope")
    assert server.verify("REGISTER", bad, 61.0, password="pw").outcome is AuthOutcome.REJECTED


def test_nonce_count_replay_is_rejected(server: DigestServer) -> None:
    creds = _creds(server, 0.0)
    assert server.verify("REGISTER", creds, 1.0, password="pw").ok
    r = server.verify("REGISTER", creds, 2.0, password="pw")
    assert r.outcome is AuthOutcome.REJECTED and "replayed" in r.reason


def test_client_counts_up_and_server_accepts_increasing_nc(server: DigestServer) -> None:
    challenge = [v for _, v in server.challenge(0.0) if "SHA-256" in v]
    client = DigestClient("1001", "pw")
    for i in range(3):
        assert server.verify("REGISTER", client.answer(challenge, "REGISTER", "sip:pbx.example.com"), 1.0 + i, password="pw").ok


def test_forged_nonce_method_change_and_malformed(server: DigestServer) -> None:
    creds = _creds(server, 0.0)
    forged = creds.replace('nonce="', 'nonce="0')
    assert server.verify("REGISTER", forged, 1.0, password="pw").outcome is AuthOutcome.REJECTED
    assert server.verify("INVITE", creds, 1.0, password="pw").outcome is AuthOutcome.REJECTED
    assert server.verify("REGISTER", 'Digest username="1001"', 1.0, password="pw").outcome is AuthOutcome.MALFORMED
    assert server.verify("REGISTER", 'Digest realm="open', 1.0, password="pw").outcome is AuthOutcome.MALFORMED
    assert server.verify("REGISTER", "Basic QWxhZGRpbjpvcGVu", 1.0, password="pw").outcome is AuthOutcome.REJECTED
    other_realm = DigestServer("other", b"k" * 32)
    assert other_realm.verify("REGISTER", creds, 1.0, password="pw").outcome is AuthOutcome.REJECTED


def test_client_authorize_from_response_headers() -> None:
    server = DigestServer("trunk.example.net", b"s" * 32, algorithms=("MD5",))
    h401 = Headers(server.challenge(5.0))
    name, value = DigestClient("acct", "pw").authorize(h401, "INVITE", "sip:+15550100@trunk.example.net")
    assert name == "Authorization"
    assert server.verify("INVITE", value, 6.0, password="pw", uri="sip:+15550100@trunk.example.net").ok
    h407 = Headers(server.challenge(5.0, proxy=True))
    assert DigestClient("acct", "pw").authorize(h407, "INVITE", "sip:x@y")[0] == "Proxy-Authorization"
    with pytest.raises(RemoteProtocolError):
        DigestClient("acct", "pw").authorize(Headers(), "INVITE", "sip:x@y")


def test_nonce_table_is_bounded() -> None:
    server = DigestServer("r", b"k", max_tracked_nonces=10, algorithms=("MD5",))
    for i in range(50):
        challenge = [v for _, v in server.challenge(float(i))]
        creds = DigestClient("u", "p").answer(challenge, "REGISTER", "sip:r")
        assert server.verify("REGISTER", creds, float(i), password="p").ok
    assert len(server._nc) <= 10
