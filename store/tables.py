"""The table spec: every table's columns and DuckDB types, declared once.

The SQL migrations (``migrations/NNNN_*.sql``) create the database and stay its source of
truth; this module restates what they end at, so Python can build Arrow schemas, casts,
column lists and row counts without a connection. ``tests/test_table_spec.py`` applies every
migration to an empty database and checks that this spec equals the catalog (same tables,
columns in order, types, nullability, generated columns), so any drift fails a test.

Types are spelled as DuckDB's catalog reports them (``duckdb_columns().data_type``): a
``REAL`` column reads ``FLOAT``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class ColumnType:
    """A DuckDB column type with the Arrow and numpy types Python writes it as.

    ``generated``: computed by the database from other columns (never written).
    """

    sql: str
    arrow: pa.DataType
    numpy: Any
    nullable: bool = False
    generated: bool = False

    @property
    def null(self) -> "ColumnType":
        return replace(self, nullable=True)

    @property
    def derived(self) -> "ColumnType":
        # DuckDB reports every generated column as nullable.
        return replace(self, nullable=True, generated=True)


TINYINT = ColumnType("TINYINT", pa.int8(), np.int8)
SMALLINT = ColumnType("SMALLINT", pa.int16(), np.int16)
INTEGER = ColumnType("INTEGER", pa.int32(), np.int32)
BIGINT = ColumnType("BIGINT", pa.int64(), np.int64)
FLOAT = ColumnType("FLOAT", pa.float32(), np.float32)  # REAL in the migrations
DOUBLE = ColumnType("DOUBLE", pa.float64(), np.float64)
BOOLEAN = ColumnType("BOOLEAN", pa.bool_(), np.bool_)
VARCHAR = ColumnType("VARCHAR", pa.string(), object)
JSON = ColumnType("JSON", pa.string(), object)  # written as JSON text
TIMESTAMP = ColumnType("TIMESTAMP", pa.timestamp("us"), "datetime64[us]")
VARCHAR_LIST = ColumnType("VARCHAR[]", pa.list_(pa.string()), object)


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType


@dataclass(frozen=True)
class Table:
    """One table: its name, its group and its columns in catalog order.

    Groups: ``run`` (a run and what belongs to it as a whole), ``prompt`` (the sweep's
    per-prompt results, one :class:`store.models.PromptResult` table each, besides
    ``prompts`` itself), ``summary`` (derived from ``edges`` by SQL), ``experiment``, ``graph`` (general graphs, 0013),
    ``dfa`` (direct feature attribution, 0015).
    """

    name: str
    group: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def written(self) -> tuple[str, ...]:
        """The columns an INSERT may name (generated ones are computed by DuckDB)."""
        return tuple(c.name for c in self.columns if not c.type.generated)

    @property
    def generated(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.type.generated)

    def type_of(self, column: str) -> ColumnType:
        for c in self.columns:
            if c.name == column:
                return c.type
        raise KeyError(f"table {self.name} has no column {column!r}")

    def arrow_schema(self, columns: tuple[str, ...] | None = None) -> pa.Schema:
        """The Arrow schema of ``columns`` (default: every written column), in that order."""
        names = self.written if columns is None else columns
        return pa.schema([pa.field(n, self.type_of(n).arrow, self.type_of(n).nullable) for n in names])

    def numpy_dtypes(self, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Column -> numpy dtype of every written column not in ``skip``, in order."""
        return {n: self.type_of(n).numpy for n in self.written if n not in skip}


def _table(name: str, group: str, **columns: ColumnType) -> Table:
    return Table(name, group, tuple(Column(n, t) for n, t in columns.items()))


# The id columns every table but runs starts with, written from outside the computed data.
RUN_KEY = {"run_id": INTEGER}
PROMPT_KEY = {"run_id": INTEGER, "prompt_id": INTEGER}
EXPERIMENT_KEY = {"run_id": INTEGER, "experiment_id": INTEGER}

TABLES: tuple[Table, ...] = (
    # -- 0001_initial, 0006_ingest_errors, 0007_config_version -------------------------------
    _table(
        "runs", "run",
        run_id=INTEGER, run_key=VARCHAR, status=VARCHAR, model=VARCHAR, model_source=VARCHAR,
        model_sha256=VARCHAR.null, model_config=JSON, prompts_source=VARCHAR.null, n_prompts=INTEGER,
        coefficient=DOUBLE.derived, edge_top_k=INTEGER.derived, edge_floor=DOUBLE.derived,
        logit_top_k=INTEGER.derived, top_next_k=INTEGER.derived, prepend_bos=BOOLEAN,
        read_position=INTEGER.derived, device=VARCHAR, dtype=VARCHAR.derived, config=JSON,
        config_version=INTEGER, featuregraph_version=VARCHAR, torch_version=VARCHAR,
        sae_lens_version=VARCHAR, transformer_lens_version=VARCHAR, started_at=TIMESTAMP,
        finished_at=TIMESTAMP.null,
    ),  # fmt: skip
    _table(
        "run_saes", "run",
        **RUN_KEY, layer=SMALLINT, site_kind=VARCHAR, hook_name=VARCHAR, d_in=INTEGER, d_sae=INTEGER,
        architecture=VARCHAR, release=VARCHAR.null, sae_id=VARCHAR.null, path=VARCHAR.null, sha256=VARCHAR,
        neuronpedia_id=VARCHAR.null, config=JSON,
    ),  # fmt: skip
    _table(
        "prompts", "run",
        **PROMPT_KEY, text=VARCHAR, text_sha256=VARCHAR, tag=VARCHAR.null, metadata=JSON.null,
        n_tokens=SMALLINT, n_ablations=INTEGER, ingested_at=TIMESTAMP, external_id=VARCHAR.null,
        tags=VARCHAR_LIST.null,
    ),  # fmt: skip
    _table("tokens", "prompt", **PROMPT_KEY, position=SMALLINT, token_id=INTEGER, token=VARCHAR),
    _table("top_next_tokens", "prompt", **PROMPT_KEY, rank=SMALLINT, token_id=INTEGER, prob=FLOAT, logp=FLOAT),
    _table("vocab", "run", **RUN_KEY, token_id=INTEGER, token=VARCHAR),
    _table(
        "activations", "prompt",
        **PROMPT_KEY, layer=SMALLINT, position=SMALLINT, feature=INTEGER, activation=FLOAT,
    ),  # fmt: skip
    _table(
        "ablations", "prompt",
        **PROMPT_KEY, layer=SMALLINT, feature=INTEGER, n_positions=SMALLINT, max_activation=FLOAT,
        read_activation=FLOAT,
    ),  # fmt: skip
    _table(
        "edges", "prompt",
        **PROMPT_KEY, up_layer=SMALLINT, up_feature=INTEGER, down_layer=SMALLINT, down_feature=INTEGER,
        weight=FLOAT,
    ),  # fmt: skip
    _table(
        "logit_effects", "prompt",
        **PROMPT_KEY, layer=SMALLINT, feature=INTEGER, token_id=INTEGER, dlogp=FLOAT, dprob=FLOAT,
    ),  # fmt: skip
    _table(
        "ingest_errors", "run",
        **RUN_KEY, prompt_index=INTEGER, external_id=VARCHAR.null, source_line=INTEGER.null,
        reason=VARCHAR, detail=VARCHAR, excerpt=VARCHAR.null,
    ),  # fmt: skip
    # -- 0002_edge_summary: derived from edges by SQL (store/summary.py). 0012 renamed both to
    # *_base and made edge_summary / edge_occurrences views over base + edge_delta ------------
    _table(
        "edge_summary_base", "summary",
        **RUN_KEY, up_layer=SMALLINT, up_feature=INTEGER, down_layer=SMALLINT, down_feature=INTEGER,
        sign=TINYINT, n=INTEGER, sum_weight=FLOAT, sum_sq_weight=FLOAT, first_prompt_id=INTEGER,
        n_sorted=INTEGER.null,
        first_ablation_max_abs=FLOAT.null,  # 0010: the largest |weight| of first_prompt_id's ablation
    ),  # fmt: skip
    _table(
        "edge_occurrences_base", "summary",
        **RUN_KEY, n_sorted=INTEGER.null, up_layer=SMALLINT, up_feature=INTEGER, down_layer=SMALLINT,
        down_feature=INTEGER, sign=TINYINT, prompt_id=INTEGER, weight=FLOAT,
        ablation_max_abs=FLOAT.null,  # 0010: the largest |weight| of the same ablation
    ),  # fmt: skip
    _table(
        "edge_delta", "summary",
        **PROMPT_KEY, up_layer=SMALLINT, up_feature=INTEGER, down_layer=SMALLINT, down_feature=INTEGER,
        sign=TINYINT, weight=FLOAT, ablation_max_abs=FLOAT,
    ),  # fmt: skip
    # -- 0017_chain_pairs: the pair index of recurring paths (store/chain_pairs.py) ----------
    _table(
        "chain_pairs_base", "summary",
        **RUN_KEY, n=INTEGER, a_layer=SMALLINT, a_feature=INTEGER, b_layer=SMALLINT, b_feature=INTEGER,
        c_layer=SMALLINT, c_feature=INTEGER, ab_sign=TINYINT, bc_sign=TINYINT, prompt_id=INTEGER,
        ab_weight=FLOAT, bc_weight=FLOAT, ab_ablation_max_abs=FLOAT.null, bc_ablation_max_abs=FLOAT.null,
    ),  # fmt: skip
    _table(
        "chain_pair_floors", "summary",
        **RUN_KEY, floor=INTEGER.null, pairs=BIGINT, pair_rows=BIGINT, base_prompts=INTEGER, built_at=TIMESTAMP,
        full_floor=INTEGER.null,  # 0018: the floor of the last full count (store/chain_pairs.py)
    ),  # fmt: skip
    # -- 0005_experiments -------------------------------------------------------------------
    _table(
        "experiments", "experiment",
        experiment_id=INTEGER, run_id=INTEGER, kind=VARCHAR, status=VARCHAR, spec=JSON, summary=JSON.null,
        device=VARCHAR, featuregraph_version=VARCHAR, torch_version=VARCHAR, started_at=TIMESTAMP,
        finished_at=TIMESTAMP.null,
    ),  # fmt: skip
    _table("noise_contexts", "experiment", **EXPERIMENT_KEY, context_id=INTEGER, text=VARCHAR, n_tokens=SMALLINT),
    _table(
        "noise_features", "experiment",
        **EXPERIMENT_KEY, layer=SMALLINT, feature=INTEGER, n_contexts=INTEGER, n_active=INTEGER,
        edge_abs_mean=FLOAT.null, edge_abs_std=FLOAT.null, edge_abs_p95=FLOAT.null,
        dprob_abs_mean=FLOAT.null, dprob_abs_std=FLOAT.null, dprob_abs_p95=FLOAT.null,
        # 0008: the null of the ablation's largest effect (edge_abs_* / dprob_abs_* are NULL from then on)
        n_samples=INTEGER.null, null_mode=VARCHAR.null, edge_max_median=FLOAT.null, edge_max_p95=FLOAT.null,
        logit_max_median=FLOAT.null, logit_max_p95=FLOAT.null,
    ),  # fmt: skip
    _table(
        "noise_null", "experiment",
        **EXPERIMENT_KEY, layer=SMALLINT, feature=INTEGER, kind=VARCHAR, value=FLOAT, n_ge=INTEGER,
    ),  # fmt: skip
    _table(
        "noise_edges", "experiment",
        **EXPERIMENT_KEY, up_layer=SMALLINT, up_feature=INTEGER, down_layer=SMALLINT, down_feature=INTEGER,
        n=INTEGER, n_active=INTEGER, mean=FLOAT, std=FLOAT, abs_p95=FLOAT, z_scale=FLOAT,
    ),  # fmt: skip
    _table(
        "noise_logits", "experiment",
        **EXPERIMENT_KEY, layer=SMALLINT, feature=INTEGER, token_id=INTEGER, n=INTEGER, n_active=INTEGER,
        dprob_mean=FLOAT, dprob_std=FLOAT, dprob_abs_p95=FLOAT, dlogp_mean=FLOAT, dlogp_std=FLOAT,
        z_scale=FLOAT,
    ),  # fmt: skip
    _table(
        "validation_results", "experiment",
        **EXPERIMENT_KEY, prompt_index=INTEGER, text=VARCHAR, arm=VARCHAR, features=VARCHAR,
        total_variation=FLOAT, answer_token_id=INTEGER.null, answer_dprob=FLOAT.null,
        answer_dprob_frac=FLOAT.null,
        # 0009: the answer's log-prob and logit-difference change, inactive features, control matching
        answer_dlogp=FLOAT.null, wrong_token_id=INTEGER.null, logit_diff_clean=FLOAT.null,
        answer_dlogit_diff=FLOAT.null, inactive_features=VARCHAR.null, activation_ratio=FLOAT.null,
        n_unmatched=SMALLINT.null,
    ),  # fmt: skip
    _table(
        "validation_tokens", "experiment",
        **EXPERIMENT_KEY, prompt_index=INTEGER, arm=VARCHAR, kind=VARCHAR, rank=SMALLINT, token_id=INTEGER,
        p_clean=FLOAT, p_ablated=FLOAT, dprob=FLOAT, dprob_frac=FLOAT.null,
    ),  # fmt: skip
    _table(
        "curve_points", "experiment",
        **EXPERIMENT_KEY, coefficient=DOUBLE, down_activation=FLOAT.null, token_id=INTEGER, logp=FLOAT,
        prob=FLOAT,
    ),  # fmt: skip
)

# -- 0013_general_graphs: graphs of any method, imported graph files (store/graphs.py) -----
GRAPH_TABLES: tuple[Table, ...] = (
    _table(
        "graphs", "graph",
        **PROMPT_KEY, method=VARCHAR, scan=VARCHAR, slug=VARCHAR, prompt=VARCHAR, prompt_tokens=VARCHAR_LIST,
        schema_version=INTEGER.null, node_threshold=DOUBLE.null, edge_threshold=DOUBLE.null,
        source_file=VARCHAR.null, content_sha256=VARCHAR, document=JSON, imported_at=TIMESTAMP,
    ),  # fmt: skip
    _table(
        "graph_nodes", "graph",
        **PROMPT_KEY, node_index=INTEGER, node_id=VARCHAR, kind=VARCHAR, feature_type=VARCHAR,
        layer=SMALLINT.null, layer_label=VARCHAR, position=SMALLINT.null, feature=INTEGER.null,
        raw_feature=BIGINT.null, token_id=INTEGER.null, activation=DOUBLE.null, influence=DOUBLE.null,
        token_prob=DOUBLE.null, is_target_logit=BOOLEAN.null, clerp=VARCHAR.null, js_node_id=VARCHAR,
        extra=JSON.null,
    ),  # fmt: skip
    _table(
        "graph_links", "graph",
        **PROMPT_KEY, source_index=INTEGER, target_index=INTEGER, weight=DOUBLE,
    ),  # fmt: skip
)
TABLES = TABLES + GRAPH_TABLES

# -- 0015_dfa: direct feature attribution of attention features (ingest/dfa.py) --------------
DFA_TABLES: tuple[Table, ...] = (
    _table(
        "dfa_features", "dfa",
        **PROMPT_KEY, layer=SMALLINT, feature=INTEGER, position=SMALLINT, activation=FLOAT, pre_activation=DOUBLE,
        resid_layer=SMALLINT.null,
    ),  # fmt: skip
    _table(
        "dfa_parts", "dfa",
        **PROMPT_KEY, layer=SMALLINT, feature=INTEGER, method=VARCHAR, term=VARCHAR, head=SMALLINT.null,
        source_position=SMALLINT.null, up_layer=SMALLINT.null, up_feature=INTEGER.null, value=DOUBLE,
    ),  # fmt: skip
)
TABLES = TABLES + DFA_TABLES

SPEC: dict[str, Table] = {t.name: t for t in TABLES}
TABLE_NAMES: tuple[str, ...] = tuple(SPEC)
# The sweep's per-prompt result tables, in the order a prompt's rows are inserted.
PROMPT_RESULT_TABLES: tuple[str, ...] = tuple(t.name for t in TABLES if t.group == "prompt")


def table(name: str) -> Table:
    """The spec of table ``name`` (KeyError for a name the schema does not have)."""
    return SPEC[name]


def value_columns(name: str) -> tuple[str, ...]:
    """The written columns of ``name`` after its id columns (run_id, prompt_id, experiment_id):
    the ones computed data supplies."""
    ids = set(PROMPT_KEY) | set(EXPERIMENT_KEY)
    return tuple(c for c in SPEC[name].written if c not in ids)


def _check_names(name: str, given: Mapping[str, Any], want: tuple[str, ...]) -> None:
    if tuple(given) != want:
        raise ValueError(f"{name}: columns {list(given)} do not match the table spec {list(want)}")


def numpy_columns(name: str, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``columns`` (exactly :func:`value_columns` of ``name``, in order) cast to the spec's numpy
    dtypes: the in-memory form of a table's rows before they go to Arrow."""
    want = value_columns(name)
    _check_names(name, columns, want)
    spec = SPEC[name]
    return {c: np.asarray(columns[c], dtype=spec.type_of(c).numpy) for c in want}


def arrow_table(name: str, columns: Mapping[str, Any], **ids: int | np.ndarray) -> pa.Table:
    """An Arrow table of ``name`` with the spec's schema, ready for ``Database.insert_arrow``.

    ``columns`` holds exactly :func:`value_columns` of ``name`` (lists or numpy arrays; None and,
    in numpy float arrays, NaN become NULL); ``ids`` fills the id columns: one value for every row, or one per row.
    """
    want = value_columns(name)
    _check_names(name, columns, want)
    n = len(next(iter(columns.values()))) if columns else 0
    schema = SPEC[name].arrow_schema(tuple(ids) + want)
    arrays = [
        pa.array(np.full(n, value, np.int64) if np.ndim(value) == 0 else np.asarray(value), schema.field(key).type)
        for key, value in ids.items()
    ]
    for c in want:
        values = columns[c]
        typ = schema.field(c).type
        if isinstance(values, np.ndarray) and values.dtype != object:
            arrays.append(pa.array(values, from_pandas=True).cast(typ))
        else:
            arrays.append(pa.array(list(values), typ, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = [
    "Column", "ColumnType", "Table", "TABLES", "SPEC", "TABLE_NAMES", "PROMPT_RESULT_TABLES",
    "table", "value_columns", "numpy_columns", "arrow_table",
]  # fmt: skip
