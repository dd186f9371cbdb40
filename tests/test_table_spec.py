"""The table spec against the migrated catalog, the versioned run config, and `featuregraph info`'s checks."""

from __future__ import annotations

import json
import os
import shutil
import socket

import duckdb
import numpy as np
import pytest
from query_graphs import HAND_GRAPH, RUN_ROW, VOCAB, hand_database, sae_rows, write_graph
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.errors import DatabaseError
from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec, SweepConfig
from featuregraph.ingest.reload import stored_run_config
from featuregraph.query.overview import row_counts
from featuregraph.store.db import open_database
from featuregraph.store.info import database_info
from featuregraph.store.migrate import available_migrations
from featuregraph.store.run_config import CONFIG_VERSION, upgrade_config
from featuregraph.store.runs import create_run
from featuregraph.store.tables import SPEC, arrow_table
from featuregraph.store.writer import WriterNote, writer_file

CATALOG = """
SELECT table_name, column_name, data_type, is_nullable, is_generated
FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
  AND table_name <> 'schema_migrations' AND table_oid IN (SELECT table_oid FROM duckdb_tables())  -- not views
ORDER BY table_name, column_index
"""
TABLES_ONLY = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal"


def test_the_spec_equals_the_migrated_catalog(tmp_path):
    with open_database(tmp_path / "fg.duckdb") as db:
        rows = db.fetchall(CATALOG)
    catalog: dict[str, list[tuple]] = {}
    for table, column, data_type, nullable, generated in rows:
        catalog.setdefault(table, []).append((column, data_type, nullable, generated))
    spec = {
        name: [(c.name, c.type.sql, c.type.nullable, c.type.generated) for c in t.columns]
        for name, t in SPEC.items()
    }
    assert sorted(spec) == sorted(catalog)
    for name in spec:
        assert spec[name] == catalog[name], name


def test_info_and_the_dashboard_count_every_table(tmp_path):
    path = hand_database(tmp_path / "fg.duckdb")
    with open_database(path, read_only=True) as db:
        tables = {r[0] for r in db.fetchall(TABLES_ONLY)} - {"schema_migrations"}
        dashboard = dict(row_counts(db).iter_rows())
        edges = db.fetchone("SELECT count(*) FROM edges")[0]
    info = database_info(path)["row_counts"]
    assert set(info) == tables and info == dashboard
    assert info["edges"] == edges == sum(len(e) for _, e in HAND_GRAPH.values())


def test_rows_that_do_not_match_the_spec_are_refused():
    with pytest.raises(ValueError, match="do not match the table spec"):
        arrow_table("curve_points", {"coefficient": [0.0], "token_id": [1], "logp": [0.0], "prob": [1.0]}, run_id=1, experiment_id=1)
    t = arrow_table("curve_points", {"coefficient": [0.5], "down_activation": np.array([np.nan]), "token_id": [3],
                                     "logp": [-1.0], "prob": [0.25]}, run_id=2, experiment_id=7)  # fmt: skip
    assert t.schema.field("token_id").type == SPEC["curve_points"].type_of("token_id").arrow
    assert t.to_pylist() == [{"run_id": 2, "experiment_id": 7, "coefficient": 0.5, "down_activation": None,
                              "token_id": 3, "logp": -1.0, "prob": 0.25}]  # fmt: skip


# -- run settings: stored once, versioned ----------------------------------------------------

CONFIG = RunConfig(
    model=ModelSpec("gpt2", center_unembed=False),
    saes=(SaeSpec(release="gpt2-small-res-jb", sae_id="blocks.0.hook_resid_pre"),
          SaeSpec(release="gpt2-small-res-jb", sae_id="blocks.1.hook_resid_pre")),
    sweep=SweepConfig(coefficient=0.5, edge_top_k=7, edge_floor=0.25, logit_top_k=3, top_next_k=4, batch_size=16),
    dtype="float64",
    prepend_bos=True,
)  # fmt: skip
V1_RUN = """
INSERT INTO runs (run_key, status, model, model_source, model_config, prompts_source, n_prompts, coefficient,
                  edge_top_k, edge_floor, logit_top_k, top_next_k, prepend_bos, read_position, device, dtype, config,
                  featuregraph_version, torch_version, sae_lens_version, transformer_lens_version, started_at)
VALUES (?, 'complete', 'gpt2', 'hub', '{}', 'p.txt', 2, 0.5, 7, 0.25, 3, 4, true, -1, 'cpu', 'float64', ?,
        '0.1', '-', '-', '-', now())
"""


def _database_at_version_6(path):
    """A database as featuregraph wrote it before migration 0007, with two runs: one whose config
    is RunConfig.to_dict() (layout 1), one whose config is empty (only the flat columns hold its settings)."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")  # fmt: skip
    for mig in available_migrations():
        if mig.version < 7:
            con.execute(mig.sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [mig.version, mig.name])
    con.execute(V1_RUN, ["a", json.dumps(CONFIG.to_dict())])
    con.execute(V1_RUN, ["b", "{}"])
    con.close()


def test_an_old_format_run_is_upgraded_to_the_current_config(tmp_path):
    path = tmp_path / "v6.duckdb"
    _database_at_version_6(path)
    with open_database(path) as db:  # applies 0007
        rows = db.fetchall("SELECT run_key, config_version, coefficient, edge_top_k, edge_floor, logit_top_k, "
                           "top_next_k, read_position, dtype, prepend_bos, device FROM runs ORDER BY run_id")  # fmt: skip
        assert rows == [(key, 1, 0.5, 7, 0.25, 3, 4, -1, "float64", True, "cpu") for key in ("a", "b")]
        assert stored_run_config(db, 1) == CONFIG
        stored = json.loads(db.fetchone("SELECT config FROM runs WHERE run_id = 2")[0])
        assert stored == {"sweep": {"coefficient": 0.5, "edge_top_k": 7, "edge_floor": 0.25, "logit_top_k": 3,
                                    "top_next_k": 4, "read_position": -1}, "dtype": "float64"}  # fmt: skip
        # A setting has one copy: the column is read out of config and cannot be written apart from it.
        with pytest.raises(DatabaseError):
            db.execute("UPDATE runs SET edge_top_k = 1 WHERE run_id = 1")
        db.execute("UPDATE runs SET config = json_merge_patch(config, '{\"sweep\": {\"edge_top_k\": 9}}') WHERE run_id = 1")
        assert db.fetchone("SELECT edge_top_k FROM runs WHERE run_id = 1")[0] == 9
    layout_1 = CONFIG.to_dict()
    upgraded = upgrade_config(layout_1, 1)
    assert upgraded["ingest"] == {"too_long": "reject", "bad_prompts": "error"}
    assert RunConfig.from_stored(upgraded) == CONFIG and layout_1 == CONFIG.to_dict()


def test_a_config_newer_than_this_featuregraph_is_refused():
    with pytest.raises(DatabaseError, match=f"run config version {CONFIG_VERSION + 1} is newer"):
        upgrade_config(CONFIG.stored("reject", "error"), CONFIG_VERSION + 1)
    assert RunConfig.from_stored(upgrade_config(CONFIG.stored("reject", "error"), CONFIG_VERSION)) == CONFIG


def test_a_new_run_must_carry_its_settings_in_config(tmp_path):
    with open_database(tmp_path / "fg.duckdb") as db:
        bare = dict(RUN_ROW, config={"dtype": "float32"})
        with pytest.raises(ValueError, match="edge_top_k"):
            create_run(db, "k", bare, sae_rows(range(2)), VOCAB)
        assert db.fetchone("SELECT count(*) FROM runs")[0] == 0
        run = create_run(db, "k", RUN_ROW, sae_rows(range(2)), VOCAB)
        assert db.fetchone("SELECT config_version, edge_top_k FROM runs WHERE run_id = ?", [run]) == (
            CONFIG_VERSION, RUN_ROW["config"]["sweep"]["edge_top_k"])


# -- featuregraph info: the file's health, interrupted runs ----------------------------------


def _info(*args: str):
    res = CliRunner().invoke(app, ["info", *map(str, args)])
    return res.exit_code, res.output.strip()


def test_a_truncated_copy_is_reported_as_corrupt(tmp_path):
    path = hand_database(tmp_path / "fg.duckdb")
    assert _info(path)[0] == 0
    size = path.stat().st_size
    for cut in (size // 2, size - 4096):
        copy = tmp_path / f"cut{cut}.duckdb"
        shutil.copy(path, copy)
        os.truncate(copy, cut)
        code, out = _info(copy)
        assert code == 2 and len(out.splitlines()) == 1 and "corrupt" in out, out


def test_a_damaged_block_is_found_by_reading_every_table(tmp_path):
    path = hand_database(tmp_path / "fg.duckdb")
    with open_database(path, read_only=True) as db:
        block_size = db.fetchone("SELECT block_size FROM pragma_database_size()")[0]
        block = db.fetchone("SELECT min(block_id) FROM pragma_storage_info('edges') WHERE persistent AND block_id >= 0")[0]
    with open(path, "r+b") as f:
        f.seek(3 * 4096 + block * block_size + 64)
        f.write(b"\xff" * 256)
    assert _info(path, "--quick")[0] == 0  # the row counts come from metadata
    code, out = _info(path)
    assert code == 2 and len(out.splitlines()) == 1 and "is corrupt: table" in out, out


def _left_running(path, config: dict) -> int:
    """A run whose ingest stopped after writing two prompts: status still 'running'."""
    with open_database(path) as db:
        row = dict(RUN_ROW, model="gpt2", model_source="hub", config=config, prompts_source="prompts.jsonl", n_prompts=4)
        run = create_run(db, "k", row, sae_rows(range(4)), VOCAB)
        write_graph(db, run, {p: HAND_GRAPH[p] for p in (0, 1)})
    return run


def test_a_run_whose_writer_is_gone_is_interrupted_with_the_command_that_resumes_it(tmp_path, monkeypatch):
    path = tmp_path / "fg.duckdb"
    run = _left_running(path, CONFIG.stored("truncate", "record"))
    code, out = _info(path)
    assert code == 0, out
    assert f"run {run}: interrupted" in out and "2/4 prompts" in out
    resume = [line.split("resume it with: ", 1)[1] for line in out.splitlines() if "resume it with: " in line]
    assert len(resume) == 1

    # The command, run, asks for exactly the stored run: the same config and prompt policies.
    import shlex

    import featuregraph.ingest.run

    class Parsed(Exception):
        """Stops the command once it has parsed its options: only what it asks for is checked."""

    seen = {}

    def ingest(db, prompts, config, **kw):
        seen.update(db=db, prompts=prompts, config=config, **kw)
        raise Parsed

    monkeypatch.setattr(featuregraph.ingest.run, "ingest", ingest)
    argv = shlex.split(resume[0])
    assert argv[:2] == ["featuregraph", "ingest"]
    assert isinstance(CliRunner().invoke(app, argv[1:]).exception, Parsed)
    assert seen["config"] == CONFIG and str(seen["db"]) == str(path) and str(seen["prompts"]) == "prompts.jsonl"
    assert (seen["too_long"], seen["bad_prompts"]) == ("truncate", "record")


def test_a_run_with_a_live_writer_is_running(tmp_path):
    path = tmp_path / "fg.duckdb"
    run = _left_running(path, CONFIG.stored("reject", "error"))
    note = WriterNote(path, {"what": "featuregraph ingest --workers 2 (distributed)", "run_id": run})
    note.update()
    try:
        info = database_info(path)
        assert info["runs"][0]["state"] == "running" and info["runs"][0]["resume"] is None
        code, out = _info(path)
        assert code == 0 and f"run {run}: running (featuregraph ingest --workers 2 (distributed) (pid {os.getpid()}" in out
    finally:
        note.remove()
    # The same note from a process that is gone: the run is interrupted.
    writer_file(path).write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname(), "run_id": run}))
    assert database_info(path)["runs"][0]["state"] == "interrupted"
