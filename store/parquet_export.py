"""``featuregraph export-parquet DB OUT``: edge data as a hive-partitioned Parquet dataset.

The dataset is for readers that are not featuregraph (DuckDB, Spark, Trino, pandas/pyarrow):
``OUT/edges/run_id=R/up_layer=L/part-B-I.parquet``, one folder per run and upstream layer, each
file holding ``prompt_id, up_feature, down_layer, down_feature, weight`` (the partition
columns live in the folder names; read them with hive partitioning on, see docs/sql.md).

Exports are incremental: ``OUT/_featuregraph_export.json`` (the manifest) lists the prompts
already exported per run and the number of batches written; an export writes only the prompts
of ``prompts`` that it lacks, as batch B+1. A batch is written to a staging folder first and its
files moved into place before the manifest names it; files of a batch the manifest does not
name (left by a crash between the two) are removed before the next export, so a reader of the
dataset never sees an edge twice once an export has finished. A prompt's edges land in the
database with its ``prompts`` row (store/runs.py), so a prompt is exported whole. The
database is opened read-only: during an ingest the export reads its published snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from featuregraph.errors import InputError
from featuregraph.store.db import open_database

MANIFEST = "_featuregraph_export.json"
FORMAT_VERSION = 1
PARTITION = ("run_id", "up_layer")
EXPORTED_PROMPTS = "SELECT run_id, prompt_id FROM prompts"
# The new prompts arrive as a registered Arrow table; columns stay in the edges' types.
NEW_EDGES = """
SELECT e.run_id, e.up_layer, e.prompt_id, e.up_feature, e.down_layer, e.down_feature, e.weight
FROM edges e
SEMI JOIN __fg_export_prompts p ON p.run_id = e.run_id AND p.prompt_id = e.prompt_id
"""
_BATCH_ROWS = 1 << 20


def _ranges(ids: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.exists():
        return {"format": FORMAT_VERSION, "batches": 0, "exported": {}}
    try:
        manifest = json.loads(path.read_text())
        assert manifest["format"] == FORMAT_VERSION
        return manifest
    except (ValueError, KeyError, AssertionError, TypeError) as exc:
        raise InputError(f"{path} is not a featuregraph export manifest: {exc!r}") from exc


def _exported(manifest: dict) -> set[tuple[int, int]]:
    return {(int(run), p) for run, ranges in manifest["exported"].items() for lo, hi in ranges
            for p in range(lo, hi + 1)}  # fmt: skip


def _clean_leftovers(out: Path, batches: int) -> None:
    """Remove staging folders and the files of batches the manifest does not name."""
    for staging in out.glob(".staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    for part in (out / "edges").glob("run_id=*/up_layer=*/part-*.parquet"):
        batch = part.name.split("-")[1]
        if not batch.isdigit() or int(batch) > batches:
            part.unlink()


def export_parquet(db_path: str | Path, out: str | Path) -> dict[str, int]:
    """Export the edges of every prompt not yet in ``out``'s dataset; returns counts
    (``prompts``, ``edges``, ``batch``: 0 when there was nothing new)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; the Parquet dataset needs a folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    _clean_leftovers(out, manifest["batches"])
    done = _exported(manifest)
    with open_database(db_path, read_only=True) as db:
        new = [(int(r), int(p)) for r, p in db.fetchall(EXPORTED_PROMPTS) if (int(r), int(p)) not in done]
        if not new:
            return {"prompts": 0, "edges": 0, "batch": 0}
        batch = manifest["batches"] + 1
        staging = out / f".staging-{batch}"
        prompts = pa.table({"run_id": pa.array([r for r, _ in new], pa.int32()),
                            "prompt_id": pa.array([p for _, p in new], pa.int32())})  # fmt: skip
        db.con.register("__fg_export_prompts", prompts)
        try:
            reader = db.con.sql(NEW_EDGES).to_arrow_reader(_BATCH_ROWS)
            part = pa.schema([reader.schema.field(c) for c in PARTITION])
            ds.write_dataset(
                reader, staging, format="parquet",
                partitioning=ds.partitioning(part, flavor="hive"),
                basename_template=f"part-{batch}-{{i}}.parquet",
                max_rows_per_group=_BATCH_ROWS,
            )  # fmt: skip
        finally:
            db.con.unregister("__fg_export_prompts")
    edges = 0
    for f in sorted(staging.rglob("*.parquet")):
        edges += ds.dataset(f, format="parquet").count_rows()
        target = out / "edges" / f.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, target)
    shutil.rmtree(staging, ignore_errors=True)
    by_run: dict[int, list[int]] = {}
    for r, p in done | set(new):
        by_run.setdefault(r, []).append(p)
    manifest = {"format": FORMAT_VERSION, "batches": batch,
                "exported": {str(r): _ranges(ps) for r, ps in sorted(by_run.items())}}  # fmt: skip
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, out / MANIFEST)
    return {"prompts": len(new), "edges": edges, "batch": batch}


__all__ = ["MANIFEST", "export_parquet"]
