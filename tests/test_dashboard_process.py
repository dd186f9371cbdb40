"""`featuregraph dashboard` owns its Streamlit server: stopping featuregraph stops the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from featuregraph.dashboard.browser import free_port
from featuregraph.store.db import open_database

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def servers_on(port: int) -> list[int]:
    """PIDs of live processes whose command line serves on ``port``."""
    needle = f"--server.port\0{port}\0".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmdline = (d / "cmdline").read_bytes()
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in cmdline and state != "Z":
                pids.append(int(d.name))
    return pids


@pytest.fixture
def dashboard(tmp_path):
    """Start `featuregraph dashboard DB --headless --port P`; yield (process, port) once it serves."""
    db = tmp_path / "fg.duckdb"
    open_database(db).close()
    port = free_port()
    log = open(tmp_path / "dashboard.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "featuregraph.cli", "dashboard", str(db), "--headless", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while not answers(port):
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            assert time.monotonic() < deadline, "the dashboard did not start serving"
            time.sleep(0.3)
        assert servers_on(port), "no server process found: the check below would prove nothing"
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in servers_on(port):  # don't leave a server behind when the test fails
            os.kill(pid, signal.SIGKILL)
        log.close()


def _gone(port: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not answers(port) and not servers_on(port):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_stops_the_server(dashboard, sig):
    proc, port = dashboard
    proc.send_signal(sig)
    assert proc.wait(20) == 0
    assert _gone(port), f"the server still runs after {sig.name} to featuregraph"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_server_dies_with_a_killed_featuregraph(dashboard):
    proc, port = dashboard
    proc.kill()
    proc.wait()
    assert _gone(port), "the server outlived a SIGKILLed featuregraph"
