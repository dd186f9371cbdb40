"""Reloading a stored run's model and SAEs, for experiments on it (noise, validation, curves)."""

from __future__ import annotations

from dataclasses import dataclass

from featuregraph.errors import InputError, LoadError
from featuregraph.ingest.config import RunConfig, SweepConfig
from featuregraph.ingest.delta import load_dtype
from featuregraph.ingest.loading import Loaded, load_all
from featuregraph.ingest.sweep import Sweeper
from featuregraph.store.db import Database
from featuregraph.store.models import Node
from featuregraph.store.run_config import upgrade_config

RUN_CONFIG = "SELECT config, config_version FROM runs WHERE run_id = ?"
RUN_SAES = "SELECT hook_name, sha256 FROM run_saes WHERE run_id = ?"
LATEST_RUN = "SELECT max(run_id) FROM runs"


@dataclass
class RunContext:
    """A run's configuration with its model and SAEs loaded, ready to ablate."""

    run_id: int
    config: RunConfig
    loaded: Loaded

    def sweeper(self, **overrides) -> Sweeper:
        require_residual_sites([s.site_kind for s in self.loaded.sites if s.site_kind != "resid"], self.run_id)
        sweep = SweepConfig(**{**self.config.sweep.__dict__, **overrides})
        return Sweeper(self.loaded.model, self.loaded.sites, sweep, self.loaded.prepend_bos)

    def site_index(self, node: Node) -> int:
        for k, site in enumerate(self.loaded.sites):
            if site.layer == node.layer:
                if not 0 <= node.feature < site.d_sae:
                    raise InputError(f"feature {node} is out of range: layer {node.layer}'s SAE has {site.d_sae} features")
                return k
        layers = ", ".join(str(s.layer) for s in self.loaded.sites)
        raise InputError(f"no SAE at layer {node.layer} in run {self.run_id} (layers: {layers})")


def require_residual_sites(other_kinds: list[str], run_id: int) -> None:
    """Noise, validation and curves ablate residual sites by layer (ingest/noise.py, validation.py);
    a run with other sites is refused with one line rather than half-handled."""
    if other_kinds:
        raise InputError(
            f"noise, validation and curve experiments support residual SAE sites only; run {run_id} also has "
            f"{', '.join(sorted(set(other_kinds)))} sites"
        )


def resolve_run(db: Database, run_id: int | None) -> int:
    """The given run id if it exists, else (None) the newest run."""
    if run_id is None:
        latest = db.fetchone(LATEST_RUN)[0]
        if latest is None:
            raise InputError(f"{db.path} holds no runs yet: ingest prompts first")
        return int(latest)
    if db.fetchone(RUN_CONFIG, [run_id]) is None:
        raise InputError(f"no run {run_id} in {db.path}")
    return run_id


def stored_run_config(db: Database, run_id: int) -> RunConfig:
    """Run ``run_id``'s configuration, upgraded from whatever layout it was stored in."""
    config, version = db.fetchone(RUN_CONFIG, [run_id])
    return RunConfig.from_stored(upgrade_config(config, int(version)))


def load_run(db: Database, run_id: int, device: str | None = None) -> RunContext:
    """Load run ``run_id``'s model and SAEs as recorded, checking the SAE weights are unchanged."""
    raw, version = db.fetchone(RUN_CONFIG, [run_id])
    raw = upgrade_config(raw, int(version))
    config = RunConfig.from_stored(raw)
    # A delta-mode run (ingest/delta.py) loaded, hashed and swept its clean pass in float32; an older
    # low-precision run ("precision" = its dtype) in that dtype. Reload as it did, so the hashes match.
    dtype = config.dtype if raw["precision"] == config.dtype else load_dtype(config.dtype)
    loaded = load_all(config.model, config.saes, device or config.device, dtype, config.prepend_bos)
    stored = dict(db.fetchall(RUN_SAES, [run_id]))
    for site in loaded.sites:
        if stored.get(site.hook_name) != site.provenance["sha256"]:
            raise LoadError(
                f"the SAE at {site.hook_name} is not the one run {run_id} used (its weights changed since)"
            )
    return RunContext(run_id, config, loaded)
