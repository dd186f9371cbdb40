"""Starting the dashboard: ``streamlit run dashboard/app.py`` on a database, read-only."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

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


def serve(db: Path, port: int = 8501, address: str = "127.0.0.1", headless: bool = False) -> int:
    """Run the dashboard in the foreground until interrupted; return streamlit's exit status."""
    db = db.resolve()
    check_database(db)
    if warning := exposure_warning(address, port):
        sys.stderr.write(warning + "\n")
    env = {**os.environ, DB_ENV: str(db)}
    try:
        return subprocess.call(streamlit_command(db, port, address, headless), env=env)
    except KeyboardInterrupt:
        return 0


__all__ = ["APP", "check_database", "exposure_warning", "serve", "streamlit_command"]
