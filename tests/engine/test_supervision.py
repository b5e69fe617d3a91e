"""The sans-IO parts of supervision: the monitor state machine, recorder channels per mode, the hear sets
of each mode proven on a hand-ticked media engine, event scope and the supervisor-extension config key."""
from __future__ import annotations

import socket
from types import SimpleNamespace

import numpy as np
import pytest

from engine.config import parse_config
from engine.errors import ConfigError
from engine.passwords import hash_password
from engine.supervision import (
    MODE_HEAR_SET, MONITOR_TRANSITIONS, IllegalMonitorTransition, Monitor, MonitorState, MonitorTrigger,
    SupervisionMode, hide_supervisor_events, recorder_channels,
)
from media import g711
from media.engine import MediaConfig, MediaEngine
from media.rtp import RtpPacket

H = hash_password("pw", n=1024)


def monitor(**kw) -> Monitor:
    args = dict(supervisor="sup", extension="3001", tenant="default", call_id="c1", agent="1001",
                groups=("sales",), mode=SupervisionMode.LISTEN)
    args.update(kw)
    return Monitor(**args)


def test_transition_table_is_total_over_states_and_ended_is_final():
    assert set(MONITOR_TRANSITIONS) == set(MonitorState)
    assert MONITOR_TRANSITIONS[MonitorState.ENDED] == {}
    for state, table in MONITOR_TRANSITIONS.items():
        for trigger, nxt in table.items():
            m = monitor(state=state)
            assert m.fire(trigger) is nxt
    every_state_can_end = [s for s in MonitorState if s is not MonitorState.ENDED]
    for s in every_state_can_end:
        assert MONITOR_TRANSITIONS[s][MonitorTrigger.CALL_ENDED] is MonitorState.ENDED


@pytest.mark.parametrize("state,trigger", [
    (MonitorState.JOINED, MonitorTrigger.ANSWERED),
    (MonitorState.INTERCEPTED, MonitorTrigger.SWITCH),
    (MonitorState.INTERCEPTED, MonitorTrigger.INTERCEPT),
    (MonitorState.ENDED, MonitorTrigger.LEAVE),
])
def test_illegal_trigger_raises_naming_state_and_trigger(state, trigger):
    m = monitor(state=state)
    with pytest.raises(IllegalMonitorTransition, match=f"{trigger.value} not allowed in {state.value}"):
        m.fire(trigger)
    assert m.state is state


def test_mode_label_and_describe():
    m = monitor(mode=SupervisionMode.BARGE, intercept=True)
    assert m.mode_label == "intercept"
    assert m.describe()["mode"] == "intercept" and m.describe()["state"] == "ringing"
    assert monitor(mode=SupervisionMode.WHISPER).mode_label == "whisper"


def test_recorder_channels_caller_left_company_side_right():
    ids = dict(caller="c", agent="a", supervisor="s")
    for mode in SupervisionMode:
        assert recorder_channels(MonitorState.RINGING, mode, **ids) == [["c"], ["a"]]
    assert recorder_channels(MonitorState.JOINED, SupervisionMode.LISTEN, **ids) == [["c"], ["a"]]
    assert recorder_channels(MonitorState.JOINED, SupervisionMode.WHISPER, **ids) == [["c"], ["a"]]
    assert recorder_channels(MonitorState.JOINED, SupervisionMode.BARGE, **ids) == [["c"], ["a", "s"]]
    assert recorder_channels(MonitorState.INTERCEPTED, SupervisionMode.BARGE, **ids) == [["c"], ["s"]]


def test_supervisor_events_are_hidden_from_agents_only():
    ev = SimpleNamespace(name="supervisor.joined")
    assert not hide_supervisor_events(SimpleNamespace(role="agent"), ev)
    assert hide_supervisor_events(SimpleNamespace(role="supervisor"), ev)
    assert hide_supervisor_events(SimpleNamespace(role="admin"), ev)
    assert hide_supervisor_events(SimpleNamespace(role="agent"), SimpleNamespace(name="call.intercepted"))


class _Sink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write_frame(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def close(self) -> None:
        pass


TONES = {"caller": 500.0, "agent": 1100.0, "sup": 1700.0}


def _level(x: np.ndarray, hz: float) -> float:
    x = x.astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / (np.hanning(len(x)).sum() / 2)
    return float(spec[int(round(hz * len(x) / 8000))])


@pytest.mark.twin  # the media engine's batched socket IO (media/_rtpio.pyx) and its pure twin
@pytest.mark.parametrize("mode,expect", [
    (SupervisionMode.LISTEN, {"caller": {"agent"}, "agent": {"caller"}, "sup": {"caller", "agent"}}),
    (SupervisionMode.WHISPER, {"caller": {"agent"}, "agent": {"caller", "sup"}, "sup": {"caller", "agent"}}),
    (SupervisionMode.BARGE, {"caller": {"agent", "sup"}, "agent": {"caller", "sup"}, "sup": {"caller", "agent"}}),
])
def test_each_mode_hear_set_and_recording_on_a_media_engine(mode, expect):
    """Three UDP 'phones' each send a tone through a hand-ticked MediaEngine; FFT of what each gets back."""
    engine = MediaEngine(MediaConfig(port_range=None))
    socks: dict[str, tuple[socket.socket, int]] = {}
    try:
        for name in TONES:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            socks[name] = (s, engine.create_leg(name, remote=s.getsockname()).local_port)
        engine.create_room("call")
        for name in TONES:
            engine.join("call", name)
        sink = _Sink()
        engine.record("call", "rec", sink, [["caller"], ["agent"]])
        engine.apply_hear_set("call", MODE_HEAR_SET[mode], caller="caller", agent="agent", supervisor="sup")
        engine.set_channels("call", "rec", recorder_channels(MonitorState.JOINED, mode, caller="caller",
                                                             agent="agent", supervisor="sup"))
        t = np.arange(160 * 40)
        for k in range(40):
            for name, hz in TONES.items():
                s, port = socks[name]
                pcm = (6000 * np.sin(2 * np.pi * hz * t[k * 160:(k + 1) * 160] / 8000)).astype(np.int16)
                s.sendto(bytes(RtpPacket(0, k, 160 * k, 0x100 + len(name), g711.ulaw_encode(pcm).tobytes())),
                         ("127.0.0.1", port))
            engine.run_tick(k, now=100.0 + 0.02 * k)
        for name, (s, _) in socks.items():
            got = []
            while True:
                try:
                    got.append(RtpPacket.parse(s.recv(2048)))
                except BlockingIOError:
                    break
            pcm = np.concatenate([g711.ulaw_decode(np.frombuffer(p.payload, np.uint8)) for p in got[10:]])
            heard = {who for who, hz in TONES.items() if _level(pcm, hz) > 1500}
            quiet = {who for who, hz in TONES.items() if _level(pcm, hz) < 300}
            assert heard == expect[name] and heard | quiet == set(TONES), (name, heard)
        rec = np.stack(sink.frames[10:])  # [ticks, channels, 160]
        left, right = rec[:, 0, :].reshape(-1), rec[:, 1, :].reshape(-1)
        assert {w for w, hz in TONES.items() if _level(left, hz) > 1500} == {"caller"}
        want_right = {"agent", "sup"} if mode is SupervisionMode.BARGE else {"agent"}
        assert {w for w, hz in TONES.items() if _level(right, hz) > 1500} == want_right
    finally:
        engine.close()
        for s, _ in socks.values():
            s.close()


def test_set_channels_keeps_the_channel_count():
    from media.errors import LocalMediaError

    engine = MediaEngine(MediaConfig(port_range=None))
    try:
        engine.create_leg("a")
        engine.create_room("r")
        engine.join("r", "a")
        engine.record("r", "rec", _Sink(), [["a"], []])
        with pytest.raises(LocalMediaError, match="has 2 channels, not 1"):
            engine.set_channels("r", "rec", [["a"]])
        with pytest.raises(LocalMediaError, match="no recorder nope in room r"):
            engine.set_channels("r", "nope", [["a"], []])
    finally:
        engine.close()


BASE = f"""
[groups.sales]

[agents.1001]
name = "Alice"
password = "{H}"
extension = "2001"
groups = ["sales"]
"""


def test_supervisor_extension_config_key(tmp_path):
    cfg = parse_config(BASE + f"""
[users.sup]
password = "{H}"
role = "supervisor"
groups = ["sales"]
extension = "3001"
""", tmp_path / "c.toml")
    assert cfg.users["sup"].extension == "3001"


def test_supervisor_extension_errors(tmp_path):
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + f"""
[users.sup]
password = "{H}"
role = "supervisor"
groups = ["sales"]
extension = "2001"

[users.rep]
password = "{H}"
role = "reporting"
extension = "3005"

[users.boss]
password = "{H}"
role = "admin"
extension = "2001"

[users.bad]
password = "{H}"
role = "admin"
extension = "ext-9"
""", tmp_path / "c.toml")
    lines = [line.split(": ", 1)[1] for line in exc.value.errors]
    assert "users.sup.extension: extension 2001 is agent 1001's extension" in lines
    assert "users.rep.extension: only users of role 'supervisor' or 'admin' have a phone extension" in lines
    assert "users.sup.extension: extension 2001 is also user boss's extension" in lines
    assert any(line.startswith("users.bad.extension: not a phone number 'ext-9'") for line in lines)


def _centre(**agents) -> SimpleNamespace:
    """A stand-in CallCentre with just what Supervision.target reads (agents, calls, config)."""
    from engine.calls import AgentRecord, Call, CallLeg, CallState

    recs = {n: AgentRecord(n, tenant, i) for i, (n, (tenant, _)) in enumerate(agents.items())}
    conf = SimpleNamespace(agents={n: SimpleNamespace(groups=groups) for n, (_, groups) in agents.items()})
    call = Call("c-1", "default", "+491", "+4930", "carrier", "+4930", queue="sales", state=CallState.TALKING,
                agent="1001", room="room-c-1", caller=CallLeg("c-1/caller", "caller"),
                agent_leg=CallLeg("c-1/agent", "agent"))
    recs["1001"].state, recs["1001"].call_id = "busy", "c-1"
    return SimpleNamespace(agents=recs, calls={"c-1": call}, config=conf)


def _session(role: str, tenant: str = "default", groups: tuple[str, ...] = ()) -> "Session":
    from engine.ops import Session

    return Session(peer="test", user="u", role=role, tenant=tenant, groups=frozenset(groups))


def test_target_scope_rules():
    from engine.errors import Forbidden, InvalidArgs, InvalidState, NotFound
    from engine.supervision import Supervision

    sup = Supervision(_centre(**{"1001": ("default", ("sales",)), "1002": ("default", ()),
                                 "2001": ("other", ("sales",))}))
    sales = _session("supervisor", groups=("sales",))
    rec, call = sup.target(sales, "", "c-1")
    assert rec.number == "1001" and call.call_id == "c-1"
    assert sup.target(sales, "1001", "")[0].number == "1001"
    assert sup.talking_call(rec).call_id == "c-1"
    with pytest.raises(NotFound, match="no agent '2001'"):  # another tenant's agent does not exist for this user
        sup.target(sales, "2001", "")
    with pytest.raises(NotFound, match="no call 'nope'"):
        sup.target(sales, "", "nope")
    with pytest.raises(Forbidden, match="does not supervise agent 1002"):  # in no group: not supervisable
        sup.target(sales, "1002", "")
    with pytest.raises(Forbidden, match="does not supervise agent 1001"):
        sup.target(_session("supervisor", groups=("support",)), "1001", "")
    with pytest.raises(NotFound, match="is not agent 1002's"):
        sup.target(_session("admin"), "1002", "c-1")
    with pytest.raises(InvalidArgs):
        sup.target(sales, "", "")
    admin = _session("admin")
    assert sup.target(admin, "1002", "")[0].number == "1002"  # admins: the whole tenant
    with pytest.raises(InvalidState, match="agent 1002 is not on a call"):
        sup.talking_call(sup.target(admin, "1002", "")[0])
    assert sup.target(_session("admin", tenant="*"), "2001", "")[0].tenant == "other"
