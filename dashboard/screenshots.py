"""Screenshots of every dashboard page, for the README.

    python -m featuregraph.dashboard.screenshots DB [OUT_DIR] [--prompt N] [--feature L.F]

Serves the dashboard on DB (dashboard/browser.py), opens each page in headless Chromium, waits
until it settles and saves ``OUT_DIR/<page>.png`` (default docs/screenshots), reduced to a
256-colour palette to keep the files small. ``--path "L.F -> L.F -> L.F"`` (and ``--signs``)
adds ``graph-path.png``: the prompt's graph following that path, highlighted.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from urllib.parse import urlencode

from featuregraph.dashboard.browser import chromium, served, wait_idle

VIEWPORT = {"width": 1280, "height": 1000}
OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def _save(png: bytes, path: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def take(db: Path, out: Path, shots: list[tuple]) -> list[Path]:
    """``shots``: (page, query parameters, viewport height[, file stem, default the page]);
    returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with served(db) as url, chromium() as browser:
        for name, params, height, *stem in shots:
            page = browser.new_page(viewport={**VIEWPORT, "height": height})
            page.goto(f"{url}/?{urlencode({'page': name, **params})}")
            wait_idle(page, quiet_s=1.0)
            if name == "graph":
                page.wait_for_selector("svg g.node", timeout=60_000)
                page.wait_for_timeout(500)
            if name == "paths":  # the top paths, computed after the page is drawn
                page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
                wait_idle(page, quiet_s=1.0)
            if stem and stem[0] == "feature-dfa":  # the attention feature's DFA tab
                page.get_by_role("tab", name="DFA").click()
                page.wait_for_selector("canvas, svg.marks", timeout=60_000)
                wait_idle(page, quiet_s=1.0)
            if name == "sql":  # show a result, not just the form
                page.get_by_role("button", name="Run").click()
                page.wait_for_selector("text=Download CSV", timeout=60_000)
                wait_idle(page, quiet_s=1.0)
            path = out / f"{stem[0] if stem else name}.png"
            _save(page.screenshot(), path)
            written.append(path)
            page.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("db", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=OUT)
    parser.add_argument("--prompt", type=int, default=0)
    parser.add_argument("--feature", default=None)
    parser.add_argument("--graph-height", type=int, default=1500)
    parser.add_argument("--path", default=None, help="also graph-path.png: --prompt's graph following this path")
    parser.add_argument("--signs", default=None, help="the path's sign pattern, e.g. '+-'")
    parser.add_argument("--run", type=int, default=None, help="the run every page shows (default: the newest)")
    parser.add_argument("--dfa-feature", default=None, help="also feature-dfa.png: this attention feature's DFA tab")
    parser.add_argument("--dfa-run", type=int, default=None, help="the run of --dfa-feature")
    args = parser.parse_args()
    run = {"run": args.run} if args.run is not None else {}
    feature = {"feature": args.feature} if args.feature else {}
    shots = [
        ("overview", run, 1000),
        ("graph", {"prompt": args.prompt, **run}, args.graph_height),
        ("paths", run, 1900),  # the form, then the top paths below it
        ("feature", {**feature, **run}, 1000),
        ("noise", run, 1200),
        ("sql", {}, 900),
    ]
    if args.path:
        follow = {"prompt": args.prompt, "path": args.path, **({"signs": args.signs} if args.signs else {}), **run}
        shots.append(("graph", follow, args.graph_height, "graph-path"))
    if args.dfa_feature:
        dfa = {"feature": args.dfa_feature, **({"run": args.dfa_run} if args.dfa_run is not None else {})}
        shots.append(("feature", dfa, 1400, "feature-dfa"))
    for path in take(args.db.resolve(), args.out, shots):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")  # noqa: T201


if __name__ == "__main__":
    main()
