"""Walk every row of the four RFC 3261 §17 / RFC 6026 transaction tables with
a fake clock and a recording owner, checking the state, what was sent and
which timers run."""
from __future__ import annotations

import pytest

from sip.errors import LocalProtocolError
from sip.timers import T1, T2, T4, TimerHeap
from sip.transaction import (
    INVITE_CLIENT, INVITE_SERVER, NON_INVITE_CLIENT, NON_INVITE_SERVER, ClientTransaction,
    InviteClientState as IC, InviteServerState as IS, NonInviteClientState as NC,
    NonInviteServerState as NS, ServerTransaction, Trigger as T,
)

ADDR = ("127.0.0.1", 5999)


class Owner:
    def __init__(self) -> None:
        self.timers = TimerHeap()
        self.sent: list[bytes] = []
        self.ended: list[tuple[object, T]] = []

    def transmit(self, data: bytes, addr, transport: str) -> None:
        assert addr == ADDR
        self.sent.append(data)

    def transaction_ended(self, txn, trigger: T) -> None:
        self.ended.append((txn, trigger))

    def run(self, now: float) -> None:
        self.timers.run_due(now)


def client(method: str = "INVITE", transport: str = "UDP"):
    o = Owner()
    return o, ClientTransaction(o, ("z9hG4bK1", method), method, "cid", b"REQ", ADDR, transport, 0.0)


def server(method: str = "INVITE", transport: str = "UDP"):
    o = Owner()
    return o, ServerTransaction(o, ("z9hG4bK1", "h", 1, method), method, "cid", ADDR, transport, 0.0)


def timers_of(txn) -> set:
    return {k for k, e in txn._timers.items() if e.active}


# ---------------------------------------------------------------- INVITE client

def test_invite_client_timer_a_doubles_without_cap_and_b_times_out():
    o, t = client()
    assert o.sent == [b"REQ"] and timers_of(t) == {T.TIMER_A, T.TIMER_B}
    times = []
    now = 0.0
    while t.state is IC.CALLING:
        now = o.timers.next_deadline()
        o.run(now)
        times.append(now)
    # A at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; B at 32 (64*T1).
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0]
    assert len(o.sent) == 7 and t.state is IC.TERMINATED
    assert o.ended == [(t, T.TIMER_B)] and len(o.timers) == 0


def test_invite_client_provisional_stops_a_keeps_b():
    o, t = client()
    assert t.receive_response(180, 0.1) is True and t.state is IC.PROCEEDING
    assert timers_of(t) == {T.TIMER_B}
    assert t.receive_response(183, 0.2) is True and t.state is IC.PROCEEDING
    o.run(32.0)
    assert t.state is IC.TERMINATED and o.ended[0][1] is T.TIMER_B


@pytest.mark.parametrize("first", [None, 180])
def test_invite_client_2xx_accepted_passes_retransmissions_then_timer_m(first):
    o, t = client()
    if first:
        t.receive_response(first, 0.1)
    assert t.receive_response(200, 0.2) is True and t.state is IC.ACCEPTED
    assert timers_of(t) == {T.TIMER_M}
    assert t.receive_response(200, 0.7) is True  # RFC 6026: TU ACKs again
    assert t.receive_response(180, 0.8) is False  # stray provisional ignored
    assert t.receive_response(486, 0.8) is False
    o.run(0.2 + 64 * T1)
    assert t.state is IC.TERMINATED and o.ended == [(t, T.TIMER_M)]


def test_invite_client_non2xx_acks_absorbs_and_timer_d():
    o, t = client()
    assert t.receive_response(486, 0.1, ack_data=b"ACK") is True and t.state is IC.COMPLETED
    assert o.sent == [b"REQ", b"ACK"] and timers_of(t) == {T.TIMER_D}
    assert t.receive_response(486, 0.6, ack_data=b"ACK2") is False
    assert o.sent == [b"REQ", b"ACK", b"ACK"]
    assert t.receive_response(200, 0.7) is False  # not in the COMPLETED row: ignored
    o.run(32.0)
    assert t.state is IC.COMPLETED
    o.run(32.1)
    assert t.state is IC.TERMINATED and o.ended == [(t, T.TIMER_D)]


def test_invite_client_over_tcp_has_no_timer_a_and_zero_d():
    o, t = client(transport="TCP")
    assert timers_of(t) == {T.TIMER_B}
    t.receive_response(603, 0.1, ack_data=b"ACK")
    assert t.state is IC.TERMINATED and o.ended == [(t, T.TIMER_D)]


def test_invite_client_transport_error():
    o, t = client()
    t.transport_error(0.1)
    assert t.state is IC.TERMINATED and o.ended[0][1] is T.TRANSPORT_ERROR and len(o.timers) == 0


# ------------------------------------------------------------ non-INVITE client

def test_non_invite_client_timer_e_caps_at_t2_and_f_times_out():
    o, t = client("OPTIONS")
    assert timers_of(t) == {T.TIMER_E, T.TIMER_F}
    times = []
    while t.state is NC.TRYING:
        now = o.timers.next_deadline()
        o.run(now)
        times.append(now)
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    assert gaps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert times[-1] == 32.0 and o.ended == [(t, T.TIMER_F)]


def test_non_invite_client_proceeding_retransmits_every_t2():
    o, t = client("BYE")
    o.run(0.5)  # first E, interval now 1.0
    assert t.receive_response(100, 0.6) is True and t.state is NC.PROCEEDING
    o.run(1.5)  # E fires in PROCEEDING → next interval T2
    assert t.interval == T2 and len(o.sent) == 3
    assert t.receive_response(200, 2.0) is True and t.state is NC.COMPLETED
    assert timers_of(t) == {T.TIMER_K}
    assert t.receive_response(200, 2.1) is False and t.receive_response(100, 2.1) is False
    o.run(2.0 + T4)
    assert t.state is NC.TERMINATED and o.ended == [(t, T.TIMER_K)]


@pytest.mark.parametrize("status", [200, 404])
def test_non_invite_client_final_from_trying(status):
    o, t = client("REGISTER", "TCP")
    assert timers_of(t) == {T.TIMER_F}
    assert t.receive_response(status, 0.1) is True
    assert t.state is NC.TERMINATED and o.ended == [(t, T.TIMER_K)]


# ---------------------------------------------------------------- INVITE server

def test_invite_server_provisional_resent_on_retransmission():
    o, t = server()
    assert t.receive_request(0.1) is False and o.sent == []  # nothing to resend yet
    t.send_response(180, b"180", 0.2)
    assert t.receive_request(0.3) is False and o.sent == [b"180", b"180"]
    assert t.state is IS.PROCEEDING


def test_invite_server_2xx_accepted_absorbs_and_timer_l():
    o, t = server()
    t.send_response(200, b"200", 0.1)
    assert t.state is IS.ACCEPTED and timers_of(t) == {T.TIMER_L}
    assert t.receive_request(0.2) is False and o.sent == [b"200"]  # RFC 6026 §8.7
    t.send_response(200, b"200", 0.6)  # TU retransmission passes through
    assert o.sent == [b"200", b"200"]
    assert t.receive_ack(0.7) is True  # ACK reusing the branch → TU
    with pytest.raises(LocalProtocolError, match="ACCEPTED cannot take trigger TU_300_699"):
        t.send_response(500, b"500", 0.8)
    o.run(0.1 + 64 * T1)
    assert t.state is IS.TERMINATED and o.ended == [(t, T.TIMER_L)]


def test_invite_server_non2xx_timer_g_caps_and_timer_h_gives_up():
    o, t = server()
    t.send_response(486, b"486", 0.0)
    assert t.state is IS.COMPLETED and timers_of(t) == {T.TIMER_G, T.TIMER_H}
    times = []
    while t.state is IS.COMPLETED:
        now = o.timers.next_deadline()
        o.run(now)
        times.append(now)
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    assert gaps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert times[-1] == 32.0 and o.ended == [(t, T.TIMER_H)]


def test_invite_server_completed_retransmission_ack_confirmed_timer_i():
    o, t = server()
    t.send_response(404, b"404", 0.0)
    assert t.receive_request(0.1) is False and o.sent == [b"404", b"404"]
    assert t.receive_ack(0.2) is False and t.state is IS.CONFIRMED
    assert timers_of(t) == {T.TIMER_I}
    assert t.receive_ack(0.3) is False and t.receive_request(0.3) is False
    assert o.sent == [b"404", b"404"]
    o.run(0.2 + T4)
    assert t.state is IS.TERMINATED and o.ended == [(t, T.TIMER_I)]


def test_invite_server_tcp_no_timer_g_zero_timer_i():
    o, t = server(transport="TCP")
    t.send_response(404, b"404", 0.0)
    assert timers_of(t) == {T.TIMER_H}
    t.receive_ack(0.1)
    assert t.state is IS.TERMINATED


def test_invite_server_second_final_is_local_error():
    o, t = server()
    t.send_response(486, b"486", 0.0)
    with pytest.raises(LocalProtocolError, match="InviteServer|ServerTransaction INVITE in state COMPLETED"):
        t.send_response(200, b"200", 0.1)


def test_invite_server_transport_error():
    o, t = server()
    t.transport_error(0.0)
    assert t.state is IS.TERMINATED and o.ended[0][1] is T.TRANSPORT_ERROR


# ------------------------------------------------------------ non-INVITE server

def test_non_invite_server_absorbs_in_trying_resends_in_proceeding_and_completed():
    o, t = server("OPTIONS")
    assert t.receive_request(0.1) is False and o.sent == []
    t.send_response(100, b"100", 0.2)
    assert t.state is NS.PROCEEDING
    t.receive_request(0.3)
    assert o.sent == [b"100", b"100"]
    t.send_response(200, b"200", 0.4)
    assert t.state is NS.COMPLETED and timers_of(t) == {T.TIMER_J}
    t.receive_request(0.5)
    assert o.sent[-1] == b"200" and len(o.sent) == 4
    with pytest.raises(LocalProtocolError):
        t.send_response(200, b"200", 0.6)
    o.run(0.4 + 64 * T1)
    assert t.state is NS.TERMINATED and o.ended == [(t, T.TIMER_J)]


@pytest.mark.parametrize("status", [202, 481])
def test_non_invite_server_final_from_trying_tcp(status):
    o, t = server("BYE", "TCP")
    t.send_response(status, b"x", 0.0)
    assert t.state is NS.TERMINATED and o.ended[0][1] is T.TIMER_J


def test_non_invite_server_transport_error():
    o, t = server("BYE")
    t.transport_error(0.0)
    assert t.state is NS.TERMINATED


# ------------------------------------------------------------ table coverage

def _drive(kind: str, state, trigger):
    """Put a fresh transaction in ``state`` by legal steps, then fire ``trigger``."""
    if kind == "ic":
        o, t = client()
        path = {IC.CALLING: [], IC.PROCEEDING: [180], IC.ACCEPTED: [200], IC.COMPLETED: [486]}[state]
        for s in path:
            t.receive_response(s, 0.0, ack_data=b"ACK")
    elif kind == "nc":
        o, t = client("OPTIONS")
        for s in {NC.TRYING: [], NC.PROCEEDING: [100], NC.COMPLETED: [200]}[state]:
            t.receive_response(s, 0.0)
    elif kind == "is":
        o, t = server()
        path = {IS.PROCEEDING: [], IS.ACCEPTED: [200], IS.COMPLETED: [486], IS.CONFIRMED: [486, "ack"]}
        for s in path[state]:
            t.receive_ack(0.0) if s == "ack" else t.send_response(s, b"r", 0.0)
    else:
        o, t = server("OPTIONS")
        for s in {NS.TRYING: [], NS.PROCEEDING: [100], NS.COMPLETED: [200]}[state]:
            t.send_response(s, b"r", 0.0)
    assert t.state is state
    if trigger in (T.TU_PROVISIONAL, T.TU_2XX, T.TU_300_699):
        t.send_response({T.TU_PROVISIONAL: 180, T.TU_2XX: 200, T.TU_300_699: 486}[trigger], b"r", 1.0)
    elif trigger is T.TRANSPORT_ERROR:
        t.transport_error(1.0)
    else:
        t.fire(trigger, 1.0)
    return t


ROWS = [(kind, s, trig, new)
        for kind, table in (("ic", INVITE_CLIENT), ("nc", NON_INVITE_CLIENT),
                            ("is", INVITE_SERVER), ("ns", NON_INVITE_SERVER))
        for s, row in table.items() for trig, new in row.items()]


@pytest.mark.parametrize("kind,state,trigger,new", ROWS,
                         ids=[f"{k}-{s.name}-{t.name}" for k, s, t, _ in ROWS])
def test_every_table_row(kind, state, trigger, new):
    t = _drive(kind, state, trigger)
    assert t.state is new


ILLEGAL = [(kind, s, trig)
           for kind, table in (("ic", INVITE_CLIENT), ("nc", NON_INVITE_CLIENT),
                               ("is", INVITE_SERVER), ("ns", NON_INVITE_SERVER))
           for s, row in table.items() if s.value != "terminated"
           for trig in T if trig not in row
           and not (kind in ("ic", "nc") and trig in (T.TU_PROVISIONAL, T.TU_2XX, T.TU_300_699))]


@pytest.mark.parametrize("kind,state,trigger", ILLEGAL,
                         ids=[f"{k}-{s.name}-{t.name}" for k, s, t in ILLEGAL])
def test_every_missing_row_is_ignored_or_raises(kind, state, trigger):
    if trigger in (T.TU_PROVISIONAL, T.TU_2XX, T.TU_300_699):
        with pytest.raises(LocalProtocolError, match=f"state {state.name} cannot take trigger {trigger.name}"):
            _drive(kind, state, trigger)
    else:
        t = _drive(kind, state, trigger)
        assert t.state is state  # peer-caused stray triggers are ignored
