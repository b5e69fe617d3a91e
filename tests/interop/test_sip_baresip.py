"""baresip 1.0 registers with digest to our registrar and calls our UAS."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest_sip import HERE, free_udp_port
from sip.events import RegistrationChanged
from sip.registrar import DigestAuthenticator, Registrar
from sip.uas import AnsweringUas

pytestmark = pytest.mark.interop
TESTPEERS = HERE.parent.parent.parent / "shared" / "testpeers"


class UasThread:
    """Our UAS + registrar on its own event loop in a thread."""

    def __init__(self) -> None:
        auth = DigestAuthenticator("127.0.0.1", lambda user, realm: "secret" if user == "alice" else None)
        self.uas = AnsweringUas("127.0.0.1", 0, registrar=Registrar(auth))
        self.changes: list[RegistrationChanged] = []
        inner = self.uas.on_event

        def on_event(ev):
            if isinstance(ev, RegistrationChanged):
                self.changes.append(ev)
            inner(ev)
        self.uas.endpoint._on_event = on_event
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.address = ("", 0)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.address = self.loop.run_until_complete(self.uas.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.uas.stop())
        self.loop.close()

    def start(self) -> tuple[str, int]:
        self.thread.start()
        assert self.ready.wait(5)
        return self.address

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _wait_for(pred, timeout_s: float, what: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"baresip exited ({proc.returncode}) waiting for {what}: {log()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {log()}")


def test_baresip_registers_with_digest_and_calls_the_uas(tmp_path):
    baresip = shutil.which("baresip")
    if baresip is None:
        pytest.fail("baresip not installed")
    sys.path.insert(0, str(TESTPEERS))
    from bsctl import BaresipCtl  # read in place from ../shared/testpeers

    wav = tmp_path / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(wav),
                    "synth", "3", "sine", "1000", "vol", "0.5"], check=True, timeout=20)
    (tmp_path / "rec").mkdir()
    server = UasThread()
    host, port = server.start()
    sip_port, ctrl_port = free_udp_port(), free_udp_port()
    rtp = free_udp_port() & ~1
    config = (TESTPEERS / "baresip" / "config.template").read_text()
    for key, value in {"@SIP_PORT@": str(sip_port), "@CTRL_PORT@": str(ctrl_port),
                       "@RTP_PORTS@": f"{rtp}-{rtp + 9}", "@SRC_WAV@": str(wav),
                       "@REC_DIR@": str(tmp_path / "rec")}.items():
        config = config.replace(key, value)
    (tmp_path / "config").write_text(config)
    (tmp_path / "accounts").write_text(
        f"<sip:alice@{host}:{port}>;auth_pass=secret;regint=60;answermode=auto;audio_codecs=PCMU,PCMA\n")
    log_path = tmp_path / "baresip.log"
    out = open(log_path, "wb")
    proc = subprocess.Popen([baresip, "-f", str(tmp_path)], stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log = lambda: log_path.read_text(errors="replace")[-2000:]  # noqa: E731
    ctl = None
    try:
        deadline = time.monotonic() + 5
        while ctl is None:
            try:
                ctl = BaresipCtl(ctrl_port)
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"baresip ctrl_tcp not reachable: {log()}")
                time.sleep(0.1)
        _wait_for(lambda: bool(server.changes), 8, "REGISTER with digest", proc, log)
        change = server.changes[0]
        assert change.aor == "sip:alice@127.0.0.1" and change.reason == "registered"
        assert change.contacts[0].source[1] == sip_port
        ctl.command("dial", f"sip:bob@{host}:{port}")
        ctl.wait_event("CALL_ESTABLISHED", timeout=8)
        _wait_for(lambda: server.uas.counters.acks == 1, 5, "ACK", proc, log)
        ctl.command("hangup")
        _wait_for(lambda: server.uas.counters.ended == 1, 5, "BYE", proc, log)
        c = server.uas.counters
        assert (c.invites, c.answered) == (1, 1)
    finally:
        if ctl is not None:
            try:
                ctl.command("quit")
            except OSError:
                pass
            ctl.close()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
        server.stop()
