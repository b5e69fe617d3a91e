from sip.location import LocationService
from sip.timers import TimerHeap

SRC = ("127.0.0.1", 40000)


def make():
    h = TimerHeap()
    changes = []
    return h, changes, LocationService(h, lambda aor, reason: changes.append((aor, reason)))


def test_several_contacts_refresh_expiry_and_order():
    h, changes, loc = make()
    A = "sip:alice@example.com"
    assert loc.update(A, "sip:alice@10.0.0.1:5062", 60, "c1", 1, SRC, "UDP", 0.0, q=0.5) == "registered"
    assert loc.update(A, "sip:alice@10.0.0.2:5062", 30, "c2", 1, SRC, "UDP", 0.0) == "registered"
    assert [b.contact for b in loc.lookup(A)] == ["sip:alice@10.0.0.2:5062", "sip:alice@10.0.0.1:5062"]
    assert loc.check_order(A, "sip:alice@10.0.0.1:5062", "c1", 1) is False
    assert loc.check_order(A, "sip:alice@10.0.0.1:5062", "c1", 2) is True
    assert loc.check_order(A, "sip:alice@10.0.0.1:5062", "other", 1) is True
    assert loc.update(A, "sip:alice@10.0.0.1:5062", 60, "c1", 2, SRC, "UDP", 20.0) == "refreshed"
    b = {x.contact: x for x in loc.lookup(A)}["sip:alice@10.0.0.1:5062"]
    assert b.expires_in(20.0) == 60 and b.cseq == 2
    h.run_due(30.0)
    assert changes == [(A, "expired")]
    assert [b.contact for b in loc.lookup(A)] == ["sip:alice@10.0.0.1:5062"]
    h.run_due(70.0)  # the old deadline (60) of the refreshed binding was cancelled
    assert A in loc
    h.run_due(80.0)
    assert A not in loc and changes[-1] == (A, "expired") and len(h) == 0


def test_remove_and_remove_all():
    h, changes, loc = make()
    A = "sip:bob@example.com"
    assert loc.update(A, "sip:x@h", 0, "c", 1, SRC, "UDP", 0.0) is None
    loc.update(A, "sip:bob@h1", 60, "c", 1, SRC, "UDP", 0.0)
    loc.update(A, "sip:bob@h2", 60, "c", 2, ("10.1.1.1", 9), "TCP", 0.0, tenant="t1")
    assert loc.lookup(A)[1].source == ("10.1.1.1", 9) and loc.lookup(A)[1].tenant == "t1"
    assert loc.update(A, "sip:bob@h1", 0, "c", 3, SRC, "UDP", 1.0) == "unregistered"
    assert loc.remove_all(A) is True and loc.remove_all(A) is False
    assert loc.aors() == [] and len(h) == 0
