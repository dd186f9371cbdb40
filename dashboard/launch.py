"""Starting the dashboard: ``streamlit run dashboard/app.py`` on a database, read-only.

The server is a child process that ``serve`` owns: a stop signal to featuregraph stops it, and
it never outlives featuregraph.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

DB_ENV = "FEATUREGRAPH_DB"  # the database, for the app (also given as `-- --db PATH`)

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(
    db: Path, port: int = 8501, address: str = "127.0.0.1", headless: bool = False
) -> list[str]:
    """The ``streamlit run`` command line for ``db``: no usage statistics, no file watcher."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true" if headless else "false",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--theme.base", "light",
        "--client.toolbarMode", "minimal",
        "--", "--db", str(db),
    ]  # fmt: skip


def check_database(db: Path) -> None:
    """Fail early, with the query layer's one-line message, if ``db`` is not a readable database
    (a database an ingest is writing to is fine: the pages say so until it lets go)."""
    from featuregraph.errors import DatabaseLockedError
    from featuregraph.query.reader import open_reader

    try:
        open_reader(db).close()
    except DatabaseLockedError:
        pass


def exposure_warning(address: str, port: int) -> str | None:
    """One line for stderr when ``address`` is not a loopback address, else None."""
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name
        loopback = address.lower() == "localhost"
    if loopback:
        return None
    return (
        f"warning: listening on {address}: anyone who can reach port {port} can browse this database "
        "and run read-only SQL against it"
    )


def start(
    db: Path, port: int = 8501, address: str = "127.0.0.1", headless: bool = False, stdout: Any = None
) -> subprocess.Popen:
    """Start the Streamlit server for ``db`` in its own process group (stop it with :func:`stop`).

    Its own group, so a terminal's Ctrl-C reaches only us and we decide how the server ends; on
    Linux it also gets SIGTERM should this process die without cleaning up (even by SIGKILL).
    """
    env = {**os.environ, DB_ENV: str(db)}
    return subprocess.Popen(
        streamlit_command(db, port, address, headless),
        env=env,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def _die_with_parent() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 10.0) -> int:
    """Send ``sig`` to the server's process group, wait up to ``grace_s``, then kill the group."""
    for s, wait in ((sig, grace_s), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))


def serve(db: Path, port: int = 8501, address: str = "127.0.0.1", headless: bool = False) -> int:
    """Run the dashboard in the foreground until it exits or this process is told to stop
    (SIGTERM, SIGINT, SIGHUP), which stops the server too; return its exit status (0 when stopped)."""
    db = db.resolve()
    check_database(db)
    if warning := exposure_warning(address, port):
        sys.stderr.write(warning + "\n")
    stopped: list[int] = []

    def forward(signum, frame) -> None:
        stopped.append(signum)
        raise _Stop

    try:  # handlers first, so that no stop signal finds a server we would not stop
        previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: no handlers, the finally below still stops the server
        previous = {}
    proc = None
    try:
        proc = start(db, port, address, headless)
        return proc.wait()
    except _Stop:
        if proc is not None:
            # Ctrl-C goes on as Ctrl-C (Streamlit's own clean stop); anything else as SIGTERM.
            stop(proc, signal.SIGINT if stopped[0] == signal.SIGINT else signal.SIGTERM)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc is not None:
            stop(proc)


class _Stop(Exception):
    """Raised by the signal handler to leave ``proc.wait()``."""


__all__ = ["APP", "check_database", "exposure_warning", "serve", "start", "stop", "streamlit_command"]
