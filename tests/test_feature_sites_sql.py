"""The SQL side of site-aware feature names (migration 0014) against store/models.py, and an
upgrade of a database built at migration 0013."""

from __future__ import annotations

import duckdb
import pytest
from helpers import insert_run

from featuregraph.errors import DatabaseError
from featuregraph.store.db import open_database
from featuregraph.store.migrate import available_migrations
from featuregraph.store.models import SITE_CODES, Node, decode_feature, encode_feature

LIMIT = 2**28
INDICES = [0, 1, 7, 10603, LIMIT - 2, LIMIT - 1]
BAD_NAMES = ["", "5", "5.", ".5", "5.x.3", "5.att", "5.ATT.3", "5.att.3.1", "-1.3", "5.-3", "a.b", "1x2",
             "5.att.268435456", "5.268435456", "5.hook_z.3", "5 .3"]  # fmt: skip


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    with open_database(tmp_path_factory.mktemp("sites") / "s.duckdb") as database:
        yield database


@pytest.mark.parametrize("site", list(SITE_CODES))
def test_sql_and_python_agree_on_every_site_and_boundary_index(db, site):
    for layer in (0, 11):
        for index in INDICES:
            node = Node(layer, encode_feature(site, index))
            key, got_site, got_index, name = db.fetchone(
                "SELECT fg_feature_key(?, ?), fg_feature_site(fg_feature_key(?, ?)), "
                "fg_feature_index(fg_feature_key(?, ?)), fg_node(?, fg_feature_key(?, ?))",
                [site, index, site, index, site, index, layer, site, index],
            )
            assert key == node.feature == SITE_CODES[site] * LIMIT + index
            assert (got_site, got_index) == decode_feature(key) == (site, index)
            assert name == str(node)
            parsed = db.fetchone("SELECT fg_layer(?), fg_feature(?), fg_node_key(?)", [name, name, name])
            assert parsed[:2] == (layer, node.feature)
            assert parsed[2] == {"layer": layer, "feature": node.feature}


def test_the_res_alias_is_the_plain_residual_name(db):
    assert db.fetchone("SELECT fg_feature('5.res.10603'), fg_layer('5.res.10603')") == (10603, 5)
    assert Node.parse("5.res.10603") == Node(5, 10603)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_sql_and_python_refuse_the_same_names(db, name):
    with pytest.raises(ValueError):
        Node.parse(name)
    with pytest.raises(DatabaseError, match="not a feature name of the form LAYER.FEATURE"):
        db.fetchall("SELECT fg_feature(?)", [name])
    assert db.fetchone("SELECT fg_try_feature(?) IS NULL OR fg_try_layer(?) IS NULL", [name, name])[0]


def test_feature_key_refuses_bad_sites_and_indices(db):
    for site, index, says in [("hook_z", 0, "unknown site kind"), ("resid", -1, "outside"),
                              ("attn_z", LIMIT, "outside")]:  # fmt: skip
        with pytest.raises(DatabaseError, match=says):
            db.fetchall("SELECT fg_feature_key(?, ?)", [site, index])
        with pytest.raises(ValueError):
            encode_feature(site, index)
    # a stored value with no valid code has no site in either
    assert db.fetchone("SELECT fg_feature_site(?), fg_feature_site(-1)", [4 * LIMIT])[0:2] == (None, None)
    with pytest.raises(ValueError):
        decode_feature(4 * LIMIT)


def _database_at(path, version: int) -> None:
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    for mig in available_migrations():
        if mig.version <= version:
            con.execute(mig.sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [mig.version, mig.name]
            )
    insert_run(con, "old", "complete")
    con.execute("INSERT INTO run_saes (run_id, layer, site_kind, hook_name, d_in, d_sae, architecture, sha256, "
                "neuronpedia_id, config) VALUES (1, 0, 'resid', 'blocks.0.hook_resid_pre', 4, 10, 'standard', 'a', "
                "'gpt2-small/0-res-jb', '{}'), (1, 1, 'resid', 'blocks.1.hook_resid_pre', 4, 10, 'standard', 'b', "
                "'gpt2-small/1-res-jb', '{}')")  # fmt: skip
    for prompt, weight in [(0, 0.5), (1, 0.25)]:
        con.execute("INSERT INTO prompts (run_id, prompt_id, text, text_sha256, n_tokens, n_ablations, ingested_at) "
                    "VALUES (1, ?, 'x', 'h', 2, 1, now())", [prompt])  # fmt: skip
        con.execute("INSERT INTO edges VALUES (1, ?, 0, 3, 1, 7, ?)", [prompt, weight])
        con.execute("INSERT INTO edge_delta VALUES (1, ?, 0, 3, 1, 7, 1, ?, ?)", [prompt, weight, weight])
    con.close()


def test_a_database_built_at_0013_upgrades_and_reads_as_residual(tmp_path):
    assert max(m.version for m in available_migrations()) >= 14
    path = tmp_path / "v13.duckdb"
    _database_at(path, 13)
    with open_database(path) as db:  # applies 0014 onwards
        assert db.fetchone("SELECT max(version) FROM schema_migrations")[0] >= 14
        assert db.fetchall("SELECT up, down, n FROM edge_stats") == [("0.3", "1.7", 2)]
        out = db.fetchall("SELECT neighbour, n FROM feature_edges('0.3')")
        assert out == [("1.7", 2)] == db.fetchall("SELECT neighbour, n FROM feature_edges('0.res.3')")
        assert db.fetchall("SELECT neighbour FROM feature_edges('0.att.3')") == []
        assert db.fetchall("SELECT up_site, down_site, count(*) FROM graph_edges GROUP BY ALL") == [
            ("resid", "resid", 2)
        ]
        assert [
            r[0] for r in db.fetchall("SELECT prompt_id FROM path_prompts(['0.3', '1.7']) ORDER BY 1")
        ] == [0, 1]
        assert db.fetchall("SELECT prompt_id FROM path_prompts(['0.att.3', '1.7'])") == []


def test_after_0014_a_layer_holds_one_sae_per_site(tmp_path):
    path = tmp_path / "v13.duckdb"
    _database_at(path, 13)
    row = ("INSERT INTO run_saes (run_id, layer, site_kind, hook_name, d_in, d_sae, architecture, sha256, config) "
           "VALUES (1, 0, ?, 'h', 4, 10, 'standard', 'x', '{}')")  # fmt: skip
    with open_database(path) as db:
        assert db.fetchall("SELECT layer, site_kind, neuronpedia_id FROM run_saes ORDER BY layer") == [
            (0, "resid", "gpt2-small/0-res-jb"), (1, "resid", "gpt2-small/1-res-jb")
        ]  # fmt: skip
        db.execute(row, ["attn_z"])
        db.execute(row, ["mlp_out"])
        with pytest.raises(DatabaseError, match="[Cc]onstraint"):
            db.execute(row, ["resid"])  # two residual SAEs on one layer: still refused
        with pytest.raises(DatabaseError, match="[Cc]onstraint"):
            db.execute(row, ["hook_z"])  # not a site kind of the contract
        assert db.fetchone("SELECT count(*) FROM run_saes WHERE layer = 0")[0] == 3


def test_fg_node_spells_each_site_as_fg_site_short_does(db):
    for site, code in SITE_CODES.items():
        name, short = db.fetchone("SELECT fg_node(3, ?), fg_site_short(?)", [code * LIMIT + 9, site])
        assert name == ("3.9" if site == "resid" else f"3.{short}.9") == str(Node(3, encode_feature(site, 9)))
