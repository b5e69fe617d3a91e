"""The engine process and the CLI: `ctiengine run` as a subprocess stopped by
SIGTERM/SIGINT (exit 0, store flushed), `ctiengine ctl` against it over TCP
and Unix, start-up failures, service start/stop order, the call logger."""
from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest

from engine import __version__
from engine.app import CallLogger, Engine
from engine.cli import main as cli_main, parse_value
from foundation_helpers import PASSWORDS, cli_env, config_text, run, running_engine

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: pathlib.Path, sock_dir: str, port: int) -> pathlib.Path:
    text = config_text(sock_dir, str(tmp_path / "run.db")).replace(
        '{ transport = "tcp", host = "127.0.0.1", port = 0 }',
        f'{{ transport = "tcp", host = "127.0.0.1", port = {port} }}')
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def start_engine(config: pathlib.Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(config), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("engine did not stop within 20 s:\n" + out)
    return proc.returncode, out


def ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", "ctl", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env=env or cli_env())


def wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("engine exited early:\n" + (proc.stdout.read() if proc.stdout else ""))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("engine did not listen within 20 s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_then_ctl_then_signal_exits_0(tmp_path: pathlib.Path, sock_dir: str, sig: int) -> None:
    port = free_tcp_port()
    config = write_config(tmp_path, sock_dir, port)
    proc = start_engine(config, "--log-level", "INFO")
    try:
        wait_ready(proc, port)
        # root: a global admin sees the engine-wide counts (a tenant's admin of this two-tenant
        # config would get its tenant's calls only, docs/tenants.md)
        r = ctl("--port", str(port), "--user", "root", "--password", PASSWORDS["root"], "engine.status")
        assert r.returncode == 0, r.stderr
        status = json.loads(r.stdout)
        assert status["version"] == __version__ and status["name"] == "test"
        assert status["counts"] == {"legs": 0, "calls": 0, "registrations": 0}
        assert status["store"]["schema_version"] >= 3 and status["store"]["open"] is True
        # Unix socket, credentials from the environment, a state-changing op
        env = cli_env() | {"CTIENGINE_USER": "admin", "CTIENGINE_PASSWORD": PASSWORDS["admin"]}
        r = ctl("--unix", os.path.join(sock_dir, "ctl.sock"), "engine.log_level", "level=DEBUG", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"level": "DEBUG", "previous": "INFO"}
        # an error reply: exit 1, JSON error on stderr
        r = ctl("--port", str(port), "--user", "reports", "--password", PASSWORDS["reports"],
                "engine.log_level", "level=INFO")
        assert r.returncode == 1
        assert json.loads(r.stderr)["error"]["code"] == "forbidden"
    finally:
        code, out = stop(proc, sig)
    assert code == 0, out
    assert f"received {signal.Signals(sig).name}, shutting down" in out
    assert "engine stopped" in out
    assert not os.path.exists(os.path.join(sock_dir, "ctl.sock"))
    # the store was flushed: the audit rows of the run are on disk
    rows = sqlite3.connect(tmp_path / "run.db").execute(
        "SELECT user, op, result FROM audit_log ORDER BY id").fetchall()
    assert ("admin", "engine.log_level", "ok") in rows
    # refused attempts at state-changing ops are audited too
    assert ("reports", "engine.log_level", "error:forbidden") in rows
    assert rows.count(("admin", "auth", "ok")) == 1 and ("root", "auth", "ok") in rows
    assert ("reports", "auth", "ok") in rows


def test_ctl_without_engine_fails_cleanly(tmp_path: pathlib.Path) -> None:
    r = ctl("--port", str(free_tcp_port()), "--timeout", "3", "ping")
    assert r.returncode == 1
    assert r.stderr.startswith("cannot reach the engine at 127.0.0.1:")


def test_ctl_bad_argument_is_usage_error() -> None:
    r = ctl("ping", "novalue")
    assert r.returncode == 2 and "argument 'novalue' is not key=value" in r.stderr


def test_run_with_bad_config_exits_2(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\npath = 5\n")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{bad}:2: store.path: expected string, got integer 5"


def test_run_with_port_in_use_exits_1(tmp_path: pathlib.Path, sock_dir: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = write_config(tmp_path, sock_dir, busy.getsockname()[1])
        proc = start_engine(config)
        code, out = stop(proc) if proc.wait(timeout=30) is None else (proc.returncode, proc.stdout.read())
    assert code == 1
    assert "cannot start:" in out and "address already in use" in out


def test_version_and_value_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert parse_value("5") == 5 and parse_value("true") is True and parse_value('["a"]') == ["a"]
    assert parse_value("sales") == "sales" and parse_value("+4930") == "+4930" 
    assert parse_value("null") is None and parse_value("1001x") == "1001x"


class Recorder:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    async def start(self, engine: Engine) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        assert engine.store is not None  # the store is open before services
        assert not engine.control_servers  # listeners open after services
        engine.add_counter(f"{self.name}_things", lambda: 7)
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def test_services_start_in_order_and_stop_in_reverse(make_config: Any) -> None:
    log: list[str] = []

    async def main() -> None:
        engine = Engine(make_config(), services=[Recorder("sip", log)])
        engine.add_service(Recorder("media", log))
        await engine.start()
        status = await engine.status()
        assert status["counts"]["sip_things"] == 7 and status["services"] == ["Recorder", "Recorder"]
        with pytest.raises(RuntimeError):
            engine.add_service(Recorder("late", log))
        await engine.stop()
        await engine.stop()  # idempotent

    run(main())
    assert log == ["start sip", "start media", "stop media", "stop sip"]


def test_failed_service_start_rolls_back(make_config: Any, sock_dir: str) -> None:
    log: list[str] = []

    async def main() -> None:
        engine = Engine(make_config(), services=[Recorder("sip", log), Recorder("media", log, fail=True)])
        with pytest.raises(RuntimeError, match="media cannot start"):
            await engine.start()
        assert engine.store is None and not engine.running
        assert not os.path.exists(os.path.join(sock_dir, "ctl.sock"))

    run(main())
    assert log == ["start sip", "stop sip"]


def test_snapshot_provider_replaced_by_service(make_config: Any) -> None:
    async def main() -> None:
        async with running_engine(make_config()) as engine:
            engine.add_snapshot("calls", lambda session: [{"call_id": "c1", "tenant": session.tenant}])
            from engine.ops import Session
            snap = engine.snapshot(Session(peer="x", user="u", role="admin", tenant="default"), 41)
            assert snap["seq"] == 41 and snap["calls"] == [{"call_id": "c1", "tenant": "default"}]
    run(main())


def test_call_logger_prefixes_call_id(caplog: pytest.LogCaptureFixture) -> None:
    log = CallLogger(logging.getLogger("engine.calls"), {"call_id": "abc123"})
    with caplog.at_level(logging.INFO, logger="engine.calls"):
        log.info("answered by agent %s after %.1f s", "1001", 3.25)
    assert caplog.records[-1].getMessage() == "[abc123] answered by agent 1001 after 3.2 s"


def test_ctl_events_subscribe_streams_json_lines(make_config: Any) -> None:
    import asyncio

    async def main() -> None:
        async with running_engine(make_config()) as engine:
            host, port = engine.control_servers[0].address
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "engine.cli", "ctl", "--port", str(port), "--user", "sup",
                "--password", PASSWORDS["sup"], "--count", "2", "events.subscribe", 'events=["agent.*"]',
                cwd=ROOT, env=cli_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
            try:
                for _ in range(400):
                    if engine.bus.subscriber_count:
                        break
                    await asyncio.sleep(0.05)
                engine.bus.publish("agent.state", {"agent": "1002"}, agent="1002", group="support")  # not sup's
                engine.bus.publish("agent.state", {"agent": "1001", "state": "ready"}, agent="1001", group="sales")
                engine.bus.publish("call.ringing", {"agent": "1001"}, group="sales")  # not subscribed
                engine.bus.publish("agent.login", {"agent": "1001"}, agent="1001", group="sales")
                out, err = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            assert proc.returncode == 0, err
            lines = [json.loads(line) for line in out.decode().splitlines()]
            assert [(e["event"], e["seq"], e["data"]["agent"]) for e in lines] == [
                ("agent.state", 1, "1001"), ("agent.login", 2, "1001")]
    run(main())
