"""The project's docs are self-contained and their references resolve.

- No file cites the design note that lived outside the repository: the method's definitions are in
  docs/method.md, and code and docs cite that.
- Every relative link of README.md and docs/*.md, and every ``docs/X.md`` or ``docs/X.md#section``
  named anywhere in the repository (code comments, docstrings, SQL), points at a file that exists
  and, with ``#section``, at a heading of it.
- Every table, view and macro docs/sql.md gives a section, and every table docs/experiments.md
  lists, exists in a freshly migrated database.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from featuregraph.store.db import open_database

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
OUTSIDE_NOTE = "DESIGN" + ".md"  # spelled in two parts so that this file does not cite it
TEXT_SUFFIXES = {".py", ".md", ".sql", ".toml", ".txt", ".cfg", ".ini", ".yml", ".yaml", ".json", ".sh"}
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "node_modules", "__pycache__", ".pytest_cache"}

MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCS_REFERENCE = re.compile(r"docs/([A-Za-z0-9_-]+\.md)(#[A-Za-z0-9_-]+)?")
SECTION = re.compile(r"^#{3} `([a-z_]+)`", flags=re.MULTILINE)
TABLE_ROW_NAME = re.compile(r"^\| `([a-z_]+)` \|", flags=re.MULTILINE)

CATALOG = """
SELECT table_name FROM duckdb_tables() WHERE NOT internal
UNION SELECT view_name FROM duckdb_views() WHERE NOT internal
UNION SELECT function_name FROM duckdb_functions() WHERE function_type IN ('macro', 'table_macro') AND NOT internal
"""


def repository_files() -> list[Path]:
    """The repository's text files: git's list when this is a checkout, else a walk of the tree."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.suffix in TEXT_SUFFIXES and p.is_file()]


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", md.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return {anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def test_anchor_follows_github():
    assert anchor("How it is fast (and stays exact)") == "how-it-is-fast-and-stays-exact"
    assert anchor("`featuregraph sql`") == "featuregraph-sql"
    assert anchor("`top_next_tokens`") == "top_next_tokens"
    assert anchor("Cross-context noise: `featuregraph noise DB --corpus FILE`") == (
        "cross-context-noise-featuregraph-noise-db---corpus-file"
    )


def test_no_file_cites_the_outside_design_note():
    files = repository_files()
    assert any(p.name == "method.md" for p in files) and len(files) > 20
    citing = [
        str(p.relative_to(ROOT))
        for p in files
        if OUTSIDE_NOTE in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert citing == [], f"cite docs/method.md instead of {OUTSIDE_NOTE} in {citing}"


def test_method_doc_defines_every_number():
    """The sections the code cites, and the numbers the database stores, are defined in method.md."""
    text = (DOCS / "method.md").read_text(encoding="utf-8")
    for section in ("one-ablation", "edges", "logit-effects", "sign-convention", "paths", "cross-context-noise",
                    "validating-a-path", "response-curves", "cost-model", "sites-layers-and-feature-names"):  # fmt: skip
        assert section in anchors(DOCS / "method.md"), section
    for term in ("(c - 1) * a_i * W_dec[i]", "act_d(u ablated) - act_d(clean)", "logp_ablated(t) - logp_clean(t)",
                 "p_ablated(t) - p_clean(t)", "edge_top_k", "edge_floor", "logit_top_k", "z_score", "noise_ratio",
                 "z_scale", "total variation", "Causal Graphs of GPT-2-Small's Residual Stream"):  # fmt: skip
        assert term in text, term


def test_markdown_links_resolve():
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        for target in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check
                continue
            path, _, section = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: link to missing {target}"
            if section:
                assert section in anchors(dest), f"{page.name}: no section #{section} in {dest.name}"
            checked += 1
    assert checked > 20


def test_docs_references_in_the_repository_resolve():
    checked = 0
    for path in repository_files():
        if path.name == "test_docs.py":
            continue
        for name, section in DOCS_REFERENCE.findall(path.read_text(encoding="utf-8", errors="replace")):
            where = str(path.relative_to(ROOT))
            assert (DOCS / name).exists(), f"{where} cites missing docs/{name}"
            if section:
                assert section[1:] in anchors(DOCS / name), f"{where} cites missing docs/{name}{section}"
            checked += 1
    assert checked >= 10


def test_sql_named_in_the_docs_exists_in_the_schema(tmp_path):
    sql_doc = (DOCS / "sql.md").read_text(encoding="utf-8")
    named = set(SECTION.findall(sql_doc))
    # the first column of experiments.md's tables headed "table" (others list columns)
    blocks = (DOCS / "experiments.md").read_text(encoding="utf-8").split("\n\n")
    named |= {n for b in blocks if b.lstrip().startswith("| table") for n in TABLE_ROW_NAME.findall(b)}
    # the experiment tables and views sql.md lists in its introduction (wildcards aside)
    intro = sql_doc.split("**Conventions.**")[0]
    named |= {n for n in re.findall(r"`([a-z_]+)`", intro)}
    with open_database(tmp_path / "schema.duckdb") as db:
        catalog = {r[0] for r in db.fetchall(CATALOG)}
    assert len(named) > 25
    assert named <= catalog, sorted(named - catalog)
