"""The toll-fraud daily count survives a restart: seeded from the store's outbound CDRs of today.

Unit level (:func:`engine.tollfraud.seed_from_store` on a real SQLite store,
local day in Europe/Berlin) and engine level (a store holding today's
outbound calls, then an engine start: the cap is already reached).
"""
from __future__ import annotations

import datetime as dt
import pathlib

import pytest

from engine.app import Engine
from engine.config import parse_config
from engine.store import SqliteStore
from engine.tollfraud import TollFraudPolicy, seed_from_store
from foundation_helpers import run

BERLIN = dt.timezone(dt.timedelta(hours=1))
T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN).timestamp()  # 10:00 local
MIDNIGHT = dt.datetime(2026, 11, 23, 0, 0, tzinfo=BERLIN).timestamp()

POLICY = """
[engine]
time_zone = "Europe/Berlin"
[tenants.acme]
[tenants.globex]
[toll_fraud.acme]
max_calls_per_day = 3
[toll_fraud.globex]
max_calls_per_day = 5
[toll_fraud.default]
allow = ["+1*"]
"""


def _cdr(store: SqliteStore, call_id: str, tenant: str, start_ts: float, direction: str = "outbound") -> None:
    store.append("cdr", {"call_id": call_id, "tenant": tenant, "direction": direction, "caller_number": "+4930",
                         "dialed_number": "+4940123", "start_ts": start_ts, "end_ts": start_ts + 60,
                         "disposition": "answered"})


def test_seed_counts_todays_outbound_cdrs_per_tenant(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "s.db")
    store = SqliteStore(path, batch_interval_ms=5)
    _cdr(store, "a1", "acme", MIDNIGHT + 1)           # today, just after local midnight
    _cdr(store, "a2", "acme", T0 - 60)
    _cdr(store, "a0", "acme", MIDNIGHT - 1)           # yesterday 23:59:59 local: not counted
    _cdr(store, "a3", "acme", T0 - 30, "inbound")     # inbound: not counted
    _cdr(store, "g1", "globex", T0 - 10)
    _cdr(store, "d1", "default", T0 - 10)            # no daily cap: not seeded
    store.flush()
    store.close()
    cfg = parse_config(POLICY)
    policy = TollFraudPolicy(cfg.toll_fraud, cfg.engine.time_zone)
    assert seed_from_store(policy, path, T0) == {"acme": 2, "globex": 1}
    assert policy.calls_today("acme", T0) == 2 and policy.calls_today("globex", T0) == 1
    assert policy.check("acme", "agent", "+4940123", T0).allowed  # 2 of 3
    policy.count_call("acme", T0)
    d = policy.check("acme", "agent", "+4940123", T0)
    assert not d.allowed and d.code == "busy" and "max_calls_per_day" in d.reason
    assert policy.calls_today("acme", T0 + 86400) == 0  # the seed is today's only


def test_engine_start_seeds_the_daily_cap(tmp_path: pathlib.Path) -> None:
    """Three outbound calls today in the store and max_calls_per_day = 3: after a (re)start the
    next outbound call is refused instead of the count starting again at 0."""
    import time

    from engine.callpath import CallCentre
    from test_tenant_isolation import _free_port

    now = time.time()
    db = tmp_path / "store.db"
    store = SqliteStore(str(db), batch_interval_ms=5)
    for i in range(3):
        _cdr(store, f"c{i}", "default", now - 10 * (i + 1))
    store.flush()
    store.close()
    port = _free_port()
    text = f"""
[sip]
listen = [ {{ transport = "udp", host = "127.0.0.1", port = {port} }} ]
[media]
rtp_port_min = {32000 + (port % 200) * 10}
rtp_port_max = {32008 + (port % 200) * 10}
[store]
path = "{db}"
[trunks.carrier]
host = "127.0.0.1"
[toll_fraud.default]
max_calls_per_day = 3
"""
    # the local day: if the test runs within 40 s after midnight the rows may be yesterday's
    local = dt.datetime.fromtimestamp(now).astimezone(dt.timezone.utc)
    if (local - local.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() < 40:
        pytest.skip("run within 40 s after midnight UTC: the seeded rows may be yesterday's")

    async def main() -> None:
        eng = Engine(parse_config(text, str(tmp_path / "e.toml")), services=[CallCentre()])
        await eng.start()
        try:
            centre = next(s for s in eng.services if isinstance(s, CallCentre))
            assert centre.toll_fraud.calls_today("default", time.time()) == 3
            d = centre.toll_fraud.check("default", "system", "+4940123", time.time())
            assert not d.allowed and "max_calls_per_day" in d.reason
        finally:
            await eng.stop()
    run(main(), timeout=30)


def test_dial_check_carries_the_control_users_role() -> None:
    """A leg caused by a control user (call.dial, callback.dial) is checked against that user's role's
    patterns, not against 'agent' because an agent's phone is involved."""
    from engine.legs import DialCheck
    from engine.tollfraud import dial_policy, role_of

    cfg = parse_config('[toll_fraud.default]\nallow = ["+49*"]\n'
                       'roles = { agent = ["+4930*"], supervisor = ["+4940*"] }\n')
    policy = TollFraudPolicy(cfg.toll_fraud, "UTC")
    check = dial_policy(policy, lambda: T0)
    by_agent = DialCheck("default", "out", "+4940123", "", "c1", agent="1001", purpose="dial")
    assert role_of(by_agent.agent, by_agent.purpose, by_agent.role) == "agent"
    assert "roles.agent" in (check(by_agent) or "")
    by_sup = DialCheck("default", "out", "+4940123", "", "c2", agent="1001", purpose="dial", role="supervisor")
    assert check(by_sup) is None  # the supervisor's list allows +4940*
    by_sup_far = DialCheck("default", "out", "+4930123", "", "c3", agent="1001", purpose="dial", role="supervisor")
    assert "roles.supervisor" in (check(by_sup_far) or "")
    assert role_of("", "ivr_transfer") == "ivr" and role_of("", "forward") == "system"


def test_ops_check_numbers_with_the_callers_role(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """call.dial, call.transfer and call.consult to an external number are checked against the
    *control user's* role at once (forbidden before any phone rings); another role's list is not used."""
    import test_tenant_isolation as ti

    base = ti.config_text
    nobody = ti._free_port()  # the supervisor's allowed legs go to a UDP port nobody answers
    trunk = '[trunks.ta_trunk]\ntenant = "ta"\nhost = "127.0.0.1"\n'
    monkeypatch.setattr(ti, "config_text", lambda tmp, port: base(tmp, port).replace(
        trunk, trunk + f"port = {nobody}\n") + '\n[toll_fraud.ta]\nallow = ["*"]\nroles = { admin = ["+4930*"] }\n')

    async def main() -> None:
        async with ti.two_tenants(tmp_path) as (eng, centre):
            await ti.seed(eng, centre, tmp_path)
            admin, sup = await ti.session(eng, "ta_admin"), await ti.session(eng, "ta_sup")
            try:
                assert centre.config.trunks["ta_trunk"].port == nobody
                assert (await admin.call("agent.login", agent="1001", password=ti.PW))["ok"]
                for op, args in (("call.dial", {"agent": "1001", "number": "+4940111"}),
                                 ("call.transfer", {"call_id": "tacall1", "target": "number:+4940111"}),
                                 ("call.consult", {"call_id": "tacall1", "target": "number:+4940111"})):
                    r = await admin.call(op, **args)
                    assert not r["ok"] and r["error"]["code"] == "forbidden", (op, r)
                    assert "roles.admin" in r["error"]["message"], (op, r)
                    # the supervisor's role has no list of its own: allow = ["*"] lets the number through
                    r = await sup.call(op, **args)
                    assert r["ok"] or "roles." not in r["error"]["message"], (op, r)
            finally:
                await admin.close()
                await sup.close()
    run(main(), timeout=40)
