"""End to end: the dashboard served on 127.0.0.1, driven in headless Chromium (Playwright)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from test_dashboard_support import dashboard_db_fixture  # noqa: F401

from featuregraph.dashboard.browser import CHROMIUM, chromium, served, wait_idle
from featuregraph.dashboard.nav import PAGES
from featuregraph.query import api
from featuregraph.store.db import open_database

if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)



@pytest.fixture(scope="module")
def site(dashboard_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("browser") / "streamlit.log"
    with served(dashboard_db.path, log=log) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield url, page, errors


def _no_errors(page, errors: list[str]) -> None:
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.locator("[data-testid=stAlertContentError]").count() == 0, page.locator(
        "[data-testid=stAlertContentError]"
    ).all_inner_texts()
    assert not errors, errors


def test_every_page_loads(site):
    """Each page from the sidebar; the first (noise) from its URL, as the tests below do the others."""
    url, page, errors = site
    page.goto(f"{url}/?page=noise")
    wait_idle(page)
    _no_errors(page, errors)
    for name, label in PAGES.items():
        page.locator("[data-testid=stSidebar]").get_by_text(label, exact=True).click()
        wait_idle(page)
        _no_errors(page, errors)
        assert f"page={name}" in page.url
        assert "ablated minus clean" in page.inner_text("body"), name


def test_graph_shows_the_expected_boxes_and_opens_a_feature(site, dashboard_db):
    url, page, errors = site
    page.goto(f"{url}/?page=graph&prompt=2")
    wait_idle(page)
    page.wait_for_selector("svg g.node", timeout=60_000)
    _no_errors(page, errors)
    with open_database(dashboard_db.path, read_only=True) as db:
        graph = api.prompt_graph(db, 2, dashboard_db.run_id, k=3, min_path=2)
    strongest = graph.sort(pl.col("weight").abs(), descending=True).head(30)
    want = set(strongest["up"].to_list()) | set(strongest["down"].to_list())
    titles = page.locator("svg g.node > title").evaluate_all("els => els.map(e => e.textContent)")
    shown = {re.sub(r"^n(\d+)_(\d+)$", r"\1.\2", t) for t in titles}
    assert shown == want
    labels = set(page.locator("svg g.node text").evaluate_all("els => els.map(e => e.textContent.trim())"))
    assert want <= labels  # each box is labelled layer.feature
    assert page.locator("svg g.edge").count() == strongest.height
    strokes = {p.get_attribute("stroke") for p in page.locator("svg g.edge path").all()}
    assert strokes <= {"#d62728", "#1f77b4"}
    # a click on a box opens that feature's page
    box = page.locator("svg g.node").first
    name = re.sub(r"^n(\d+)_(\d+)$", r"\1.\2", box.locator("> title").text_content())
    box.locator("a").first.click()
    page.wait_for_url(re.compile(r"page=feature"))
    wait_idle(page)
    _no_errors(page, errors)
    assert f"feature={name}" in page.url
    assert page.get_by_role("heading", name=f"Feature {name}").count() == 1


def test_a_recurring_path_can_be_opened(site, dashboard_db):
    url, page, errors = site
    page.goto(f"{url}/?page=paths")
    wait_idle(page)
    _no_errors(page, errors)
    first = " -> ".join(dashboard_db.path_nodes)
    heading = page.get_by_role("heading", name=re.compile("Prompts containing"))
    assert heading.inner_text().replace("\u2192", "->").endswith(first) or first in page.inner_text("body")
    # choose another path in the select
    select = page.get_by_label("Open a path")
    select.click()
    options = page.locator("[role=option]")
    second = options.nth(1).inner_text().split("  [")[0].split(" [")[0].strip()
    options.nth(1).click()
    wait_idle(page)
    _no_errors(page, errors)
    assert (
        second.split(" -> ")[0]
        in page.get_by_role("heading", name=re.compile("Prompts containing")).inner_text()
    )
    # and open one of its prompts' graph from the table's link
    page.get_by_role("button", name="Open its graph").click()
    wait_idle(page)
    page.wait_for_selector("svg g.node", timeout=60_000)
    _no_errors(page, errors)
    assert page.get_by_role("heading", name="Prompt graph").count() == 1
    # the graph follows the path: its steps drawn thick (class fg-path), whatever the pruning
    assert "path=" in page.url and page.locator("svg g.edge.fg-path").count() == len(second.split(" -> ")) - 1


def test_sql_console_refuses_a_write(site, dashboard_db):
    url, page, errors = site
    page.goto(f"{url}/?page=sql")
    wait_idle(page)
    area = page.get_by_role("textbox", name="SQL", exact=True)
    area.fill("DELETE FROM runs")
    page.get_by_role("button", name="Run").click()
    page.wait_for_selector("[data-testid=stAlertContentError]", timeout=30_000)
    assert page.locator("[data-testid=stAlertContentError]").inner_text().startswith("Refused:")
    area.fill("SELECT count(*) AS n FROM runs")
    page.get_by_role("button", name="Run").click()
    wait_idle(page)
    _no_errors(page, errors)
    assert "1 row" in page.inner_text("body")
    with open_database(dashboard_db.path, read_only=True) as db:
        assert db.fetchone("SELECT count(*) FROM runs")[0] == 1
