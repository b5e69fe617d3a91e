"""REGISTER handling through the sans-IO stack (fake link, fake clock)."""
from __future__ import annotations

import random

from sip.events import RegistrationChanged, ResponseReceived
from sip.auth import DigestClient
from sip.registrar import AuthResult, DigestAuthenticator, Registrar
from sip.stack import SipStack

from sipcore_pair import A_ADDR, B_ADDR, Link, events

REG_URI = "sip:127.0.0.2:5002"


def setup(authenticator=None, **kw):
    reg = Registrar(authenticator, **kw)
    a = SipStack(A_ADDR, user="alice", rng=random.Random(1))
    b = SipStack(B_ADDR, registrar=reg, rng=random.Random(2))
    return a, b, reg, Link(a, b)


def register(a, link, contact="<sip:alice@10.0.0.5:5062>", expires=None, call_id="reg-1", cseq=1,
             user="alice", extra=()):
    headers = [("Contact", contact)] if contact else []
    if expires is not None:
        headers.append(("Expires", str(expires)))
    headers.extend(extra)
    a.request("REGISTER", REG_URI, link.now, from_=f"<sip:{user}@example.com>", to=f"<sip:{user}@example.com>",
              call_id=call_id, cseq=cseq, headers=headers)
    link.pump()
    return [e.response for e in events(a) if isinstance(e, ResponseReceived)][-1]


def test_register_several_contacts_expiry_and_events():
    a, b, reg, link = setup()
    r = register(a, link, expires=120)
    assert r.status_code == 200 and [str(c.uri_text) for c in r.contact] == ["sip:alice@10.0.0.5:5062"]
    ev = events(b)
    assert [(e.aor, e.reason) for e in ev] == [("sip:alice@example.com", "registered")]
    b1 = ev[0].contacts[0]
    assert b1.source == A_ADDR and b1.transport == "UDP"  # reachable where it came from (NAT)
    r = register(a, link, contact="<sip:alice@10.0.0.6:5062>;expires=300", cseq=2)
    assert sorted(c.uri_text for c in r.contact) == ["sip:alice@10.0.0.5:5062", "sip:alice@10.0.0.6:5062"]
    assert {c.uri_text: c.expires for c in r.contact}["sip:alice@10.0.0.6:5062"] == 300
    events(b)
    link.advance(121.0)
    ev = events(b)
    assert [(e.reason, len(e.contacts)) for e in ev] == [("expired", 1)]
    assert [x.contact for x in reg.lookup("sip:alice@example.com")] == ["sip:alice@10.0.0.6:5062"]


def test_min_expires_423_wildcard_and_order():
    a, b, reg, link = setup(min_expires_s=60)
    r = register(a, link, expires=30)
    assert r.status_code == 423 and r.headers.get("Min-Expires") == "60"
    assert register(a, link, expires=3600, cseq=2).status_code == 200
    assert register(a, link, expires=3600, cseq=2).status_code == 500  # same Call-ID, same CSeq
    assert register(a, link, contact="*", expires=3600, cseq=3).status_code == 400
    r = register(a, link, contact="*", expires=0, cseq=4)
    assert r.status_code == 200 and reg.lookup("sip:alice@example.com") == []
    assert [e.reason for e in events(b) if isinstance(e, RegistrationChanged)] == ["registered", "unregistered"]


def test_query_and_max_expires_cap():
    a, b, reg, link = setup(max_expires_s=600)
    register(a, link, expires=7200)
    r = register(a, link, contact=None, cseq=2)  # no Contact: a query (§10.2.3)
    assert r.status_code == 200 and r.contact[0].expires == 600


class FakeAuth:
    """Accepts requests carrying 'Authorization: ok <user>'."""

    def authenticate(self, req, now):
        value = req.headers.get("Authorization")
        if value and value.startswith("ok "):
            return AuthResult(user=value[3:])
        return AuthResult(status=401, headers=(("WWW-Authenticate", 'Digest realm="example.com", nonce="n1"'),))


def test_authentication_hook_and_aor_ownership():
    a, b, reg, link = setup(FakeAuth())
    r = register(a, link)
    assert r.status_code == 401 and "Digest" in r.headers.get("WWW-Authenticate")
    r = register(a, link, cseq=2, extra=[("Authorization", "ok alice")])
    assert r.status_code == 200
    r = register(a, link, cseq=3, user="bob", extra=[("Authorization", "ok alice")], call_id="reg-2")
    assert r.status_code == 403


def test_register_without_registrar_is_405():
    a = SipStack(A_ADDR)
    b = SipStack(B_ADDR)
    link = Link(a, b)
    assert register(a, link).status_code == 405


def _register_with_digest(a, link, password, cseq_start=1, user="alice", now_shift=0.0):
    r = register(a, link, cseq=cseq_start, user=user)
    assert r.status_code == 401
    challenges = r.headers.get_lines("WWW-Authenticate")
    client = DigestClient(user, password)
    value = client.answer(challenges, "REGISTER", REG_URI)
    link.now += now_shift
    return register(a, link, cseq=cseq_start + 1, user=user, extra=[("Authorization", value)]), value


def test_digest_register_accepts_right_password_and_refuses_wrong_or_replayed():
    auth = DigestAuthenticator("example.com", lambda user, realm: {"alice": "secret"}.get(user))
    a, b, reg, link = setup(auth)
    r, value = _register_with_digest(a, link, "secret")
    assert r.status_code == 200 and reg.lookup("sip:alice@example.com")
    # The same Authorization again (same nc): a replay.
    r = register(a, link, cseq=3, extra=[("Authorization", value)])
    assert r.status_code == 403 and "replayed" in r.reason
    r, _ = _register_with_digest(a, link, "wrong", cseq_start=4)
    assert r.status_code == 403 and "password" in r.reason
    r, _ = _register_with_digest(a, link, "x", cseq_start=1, user="mallory")
    assert r.status_code == 403


def test_digest_stale_nonce_rechallenges():
    auth = DigestAuthenticator("example.com", lambda user, realm: "secret", nonce_lifetime_s=10)
    a, b, reg, link = setup(auth)
    r, _ = _register_with_digest(a, link, "secret", now_shift=20.0)
    assert r.status_code == 401 and "stale=true" in r.headers.get("WWW-Authenticate")


def test_client_answers_the_challenge_by_itself():
    auth = DigestAuthenticator("example.com", lambda user, realm: {"alice": "secret"}.get(user))
    a, b, reg, link = setup(auth)
    txn = a.request("REGISTER", REG_URI, link.now, from_="<sip:alice@example.com>",
                    to="<sip:alice@example.com>", headers=[("Contact", "<sip:alice@10.0.0.5>")],
                    auth=DigestClient("alice", "secret"))
    link.pump()
    responses = [e for e in events(a) if isinstance(e, ResponseReceived)]
    assert [r.response.status_code for r in responses] == [200]  # the 401 was handled inside
    assert txn.retried_as is responses[0].transaction
    assert responses[0].response.cseq == (2, "REGISTER") and reg.lookup("sip:alice@example.com")
    # Wrong password: one retry, then the 403 reaches the application.
    a.request("REGISTER", REG_URI, link.now, from_="<sip:alice@example.com>", to="<sip:alice@example.com>",
              headers=[("Contact", "<sip:alice@10.0.0.5>")], auth=DigestClient("alice", "nope"))
    link.pump()
    assert [e.response.status_code for e in events(a) if isinstance(e, ResponseReceived)] == [403]
