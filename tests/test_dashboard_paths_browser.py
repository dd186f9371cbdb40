"""The prompt graph in headless Chromium: a graph of five layers and 30 edges stays readable (every
text at least 11 px on screen at the default zoom), and a path followed from the paths page is
drawn highlighted whatever the graph's pruning settings drop."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from query_graphs import new_run, prompt_result

from featuregraph.dashboard.browser import CHROMIUM, chromium, served, wait_idle
from featuregraph.store.db import open_database
from featuregraph.store.runs import write_prompt_results

if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

# 28 strong edges between five layers, and a weak chain 0.7 -> 1.7 -> 2.7 (|weight| 0.01): 30 edges.
STRONG = [(la, f, la + 1, (3 * f + la) % 7, 0.5 + 0.01 * f) for la in range(4) for f in range(7)]
WEAK_PATH = [(0, 7, 1, 7, 0.01), (1, 7, 2, 7, -0.01)]
GRAPH = {p: ("t", STRONG + WEAK_PATH) for p in range(2)}
# Twelve tokens per prompt: every box shows ten, so the drawing is wider than the page.
TOKENS = ["<bos>", *(f"word{i}" for i in range(11))]
# The effective size of every SVG text on screen: its font size times the chart's scale.
TEXT_PX = """els => els.map(e => {
    const m = e.getScreenCTM();
    return parseFloat(getComputedStyle(e).fontSize) * Math.hypot(m.a, m.b);
})"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("five")
    with open_database(root / "five.duckdb") as db:
        run = new_run(db, layers=range(5))
        write_prompt_results(db, run, [prompt_result(p, edges, tag, TOKENS) for p, (tag, edges) in GRAPH.items()])
    with served(root / "five.duckdb", log=root / "streamlit.log") as url, chromium() as browser:
        yield url, browser.new_page(viewport={"width": 1000, "height": 1600})


def _graph(page, url: str, query: str) -> None:
    page.goto(f"{url}/?page=graph&prompt=0&{query}")
    wait_idle(page)
    page.wait_for_selector("svg g.node", timeout=60_000)
    assert page.locator("[data-testid=stException]").count() == 0


def test_thirty_edges_over_five_layers_stay_readable(site):
    url, page = site
    _graph(page, url, "k=10&min_path=1&max_edges=30")
    assert page.locator("svg g.edge").count() == 30
    sizes = page.locator("svg text").evaluate_all(TEXT_PX)
    assert sizes and min(sizes) >= 11.0, sorted(sizes)[:5]
    # wider than its column: drawn at its natural size, the column scrolls sideways
    svg, column = page.locator("svg g.node").first.evaluate(
        "e => [e.ownerSVGElement.getBoundingClientRect().width, e.ownerSVGElement.parentElement.clientWidth]"
    )
    assert svg > column
    # the settings came from the URL and stay there
    assert page.locator("[data-testid=stSlider]").first.is_visible()
    assert "max_edges=30" in page.url and "k=10" in page.url


def test_a_followed_path_is_highlighted_whatever_the_pruning(site):
    url, page = site
    # |weight| >= 0.1 prunes both steps of the path; they are drawn anyway, highlighted
    _graph(page, url, "k=10&min_path=1&min_weight=0.1&max_edges=5&path=0.7+-%3E+1.7+-%3E+2.7&signs=%2B-")
    titles = page.locator("svg g.edge.fg-path > title").evaluate_all("els => els.map(e => e.textContent)")
    assert sorted(re.sub(r"&#45;|-", "-", t) for t in titles) == ["n0_7->n1_7", "n1_7->n2_7"]
    nodes = page.locator("svg g.node.fg-path > title").evaluate_all("els => els.map(e => e.textContent)")
    assert sorted(nodes) == ["n0_7", "n1_7", "n2_7"]
    assert page.locator("svg g.edge").count() == 5 + 2  # the strongest five and the path
    assert "Following the path" in page.inner_text("body")
    # a path this prompt does not contain: a note, and the plain graph
    _graph(page, url, "k=10&min_path=1&path=0.1+-%3E+1.3+-%3E+2.2")
    assert "does not contain the path" in page.inner_text("body")
    assert page.locator("svg g.edge.fg-path").count() == 0
