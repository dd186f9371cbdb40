"""The query layer: SQL helpers that live in the database (migrations/0003_query_macros.sql,
documented in docs/sql.md), a thin Python API over them (query.api, polars frames), the
read-only SQL entry point (query.readonly) and the ``featuregraph query|sql|optimize``
commands (query.cli). Nothing here imports torch."""
