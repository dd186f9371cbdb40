"""Notebook access: the featuregraph macros through a SQLAlchemy engine (duckdb-engine)."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy
from query_graphs import hand_database

from featuregraph.errors import DatabaseError
from featuregraph.store.db import open_database
from featuregraph.store.engine import sqlalchemy_engine


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory):
    return hand_database(tmp_path_factory.mktemp("sqla") / "hand.duckdb")


def test_macros_through_pandas_read_sql(hand_db):
    engine = sqlalchemy_engine(hand_db)
    sql = "SELECT path, support FROM recurring_paths(n_edges := 2, min_support := 1) ORDER BY path"
    got = pd.read_sql(sql, engine)
    with open_database(hand_db, read_only=True) as db:
        want = db.fetchall(sql)
    assert want, "the hand graph has recurring paths; an empty result would prove nothing"
    assert list(got.itertuples(index=False, name=None)) == want


def test_parameters_go_in_as_parameters(hand_db):
    engine = sqlalchemy_engine(hand_db)
    query = sqlalchemy.text("SELECT up, down, weight FROM prompt_graph(:prompt, k := 3) ORDER BY up, down")
    got = pd.read_sql(query, engine, params={"prompt": 1})
    with open_database(hand_db, read_only=True) as db:
        want = db.fetchall("SELECT up, down, weight FROM prompt_graph(?, k := 3) ORDER BY up, down", [1])
    assert want and list(got.itertuples(index=False, name=None)) == want


def test_the_engine_is_read_only(hand_db):
    with (
        sqlalchemy_engine(hand_db).connect() as con,
        pytest.raises(sqlalchemy.exc.DBAPIError, match="read-only"),
    ):
        con.execute(sqlalchemy.text("DELETE FROM edges"))


def test_a_wrong_path_is_one_line(tmp_path):
    with pytest.raises(DatabaseError):
        sqlalchemy_engine(tmp_path / "missing.duckdb")
