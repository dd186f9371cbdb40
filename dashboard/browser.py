"""Driving the dashboard in a real browser: serve it on 127.0.0.1, open pages in Chromium
(Playwright, Debian's ``/usr/bin/chromium``), wait until Streamlit is idle. Used by the
end-to-end test and by ``python -m featuregraph.dashboard.screenshots``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from featuregraph.dashboard.launch import start, stop

CHROMIUM = os.environ.get("FEATUREGRAPH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(db: Path, timeout_s: float = 60.0, log: Path | None = None) -> Iterator[str]:
    """Serve the dashboard for ``db`` on a free local port; yield its base URL."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = start(db, port, headless=True, stdout=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with status {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not answer on {url} within {timeout_s:g} s")
            time.sleep(0.2)
        yield url
    finally:
        stop(proc)
        if log:
            out.close()


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium browser (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_idle(page, timeout_s: float = 60.0, quiet_s: float = 0.4) -> float:
    """Wait until Streamlit has finished the script run and drawn everything it sent (nothing
    running, stale or loading for ``quiet_s``); return the ``time.monotonic()`` it settled at."""
    page.wait_for_selector("[data-testid=stHeading]", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        busy = page.evaluate(
            """() => !!document.querySelector('[data-testid="stStatusWidget"]')
                  || !!document.querySelector('[data-testid="stSkeleton"]')
                  || !!document.querySelector('[data-stale="true"]')"""
        )
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return quiet_since
        time.sleep(0.05)
    raise TimeoutError("the dashboard did not settle")


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium", "free_port", "served", "wait_idle"]
