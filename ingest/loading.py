"""Loading a HookedSAETransformer and its SAEs, and checking that they fit together.

Two sources for each:
- model: a hub name (``gpt2``, through ``HookedSAETransformer.from_pretrained``) or a local
  Hugging Face folder (config + weights + tokenizer), processed the same way.
- SAEs: an sae_lens release and id (``SAE.from_pretrained``) or a local sae_lens folder
  (``cfg.json`` + ``sae_weights.safetensors``, ``SAE.load_from_disk``).

Everything that can go wrong here is reported as a one-line :class:`LoadError`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from featuregraph.errors import InputError, LoadError
from featuregraph.ingest.config import ModelSpec, SaeSpec
from featuregraph.ingest.sites import feature_offset, hook_width, order_key, site_of

log = logging.getLogger(__name__)

MODEL_PROCESSING_KEYS = ("fold_ln", "center_writing_weights", "center_unembed")


@dataclass(frozen=True)
class SaeSite:
    """An SAE installed at one site (ingest/sites.py; docs/method.md#sites-layers-and-feature-names).

    ``layer``: for a residual site the residual-stream index (``blocks.L.hook_resid_pre`` is L,
    ``blocks.L.hook_resid_post`` is L+1), which is also the first block that reads it; for the
    other kinds the block index L. ``hook_name`` is the hook the SAE reads; ``hook_out`` the
    hook a transcoder writes (None for the other kinds, which write where they read).
    """

    layer: int
    hook_name: str
    sae: Any  # sae_lens.SAE
    provenance: dict[str, Any]
    site_kind: str = "resid"
    hook_out: str | None = None

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def order(self) -> tuple[int, int]:
        return order_key(self.site_kind, self.layer)

    @property
    def offset(self) -> int:
        """Added to a unit index to get the stored feature id (the site contract's encoding)."""
        return feature_offset(self.site_kind)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The SAE's own encode of the activations ``x`` at its hook, in the hook's shape
        (for hook_z ``[..., n_heads, d_head]``: an SAE with sae_lens' hook_z reshaping flattens
        heads itself, one without is given them flattened the same way)."""
        if self.site_kind == "attn_z" and not getattr(self.sae, "hook_z_reshaping_mode", False):
            x = x.flatten(-2)
        return self.sae.encode(x)


def resolve_device(device: str) -> str:
    """``auto`` picks cuda when available; asking for cuda without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LoadError(f"device {device!r} requested but no CUDA GPU is available")
    return device


def torch_dtype(dtype: str) -> torch.dtype:
    return getattr(torch, dtype)


def residual_layer(hook_name: str) -> int:
    """Residual-stream index of a ``blocks.L.hook_resid_pre/post`` hook name."""
    kind, layer = site_of(hook_name, None, False, hook_name)
    if kind != "resid":
        raise LoadError(f"{hook_name!r} is not a residual-stream hook")
    return layer


# ---------------------------------------------------------------------------- SAEs


def _tensor_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    return h.hexdigest()


def _pretrained_directory() -> dict[str, Any]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def _closest(word: str, options: list[str], limit: int = 8) -> str:
    close = difflib.get_close_matches(word, options, n=limit, cutoff=0.4)
    shown = close or options[:limit]
    more = "" if len(options) <= len(shown) else f" (and {len(options) - len(shown)} more)"
    return ", ".join(shown) + more


def check_release_spec(spec: SaeSpec) -> Any:
    """Look a release/id up in sae_lens' directory (no download); return its entry."""
    directory = _pretrained_directory()
    lookup = directory.get(spec.release)
    if lookup is None:
        raise LoadError(
            f"unknown SAE release {spec.release!r}; valid releases include: "
            f"{_closest(spec.release, sorted(directory))}"
        )
    if spec.sae_id not in lookup.saes_map:
        raise LoadError(
            f"unknown SAE id {spec.sae_id!r} in release {spec.release!r}; valid ids: "
            f"{_closest(spec.sae_id, list(lookup.saes_map))}"
        )
    return lookup


def _load_release_sae(spec: SaeSpec, device: str, dtype: str) -> tuple[Any, dict[str, Any]]:
    from sae_lens import SAE

    lookup = check_release_spec(spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sae = SAE.from_pretrained(spec.release, spec.sae_id, device=device, dtype=dtype)
    except Exception as exc:  # network, cache, conversion: all mean "could not load"
        raise LoadError(
            f"could not load SAE {spec.release}/{spec.sae_id} from the Hugging Face hub or its "
            f"cache: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    neuronpedia = (lookup.neuronpedia_id or {}).get(spec.sae_id) or sae.cfg.metadata.neuronpedia_id
    return sae, {"release": spec.release, "sae_id": spec.sae_id, "path": None, "neuronpedia_id": neuronpedia}


def _load_local_sae(spec: SaeSpec, device: str, dtype: str) -> tuple[Any, dict[str, Any]]:
    from sae_lens import SAE

    folder = Path(spec.path)
    if not folder.is_dir():
        raise LoadError(f"cannot read SAE folder {folder}: not a directory")
    for needed in ("cfg.json", "sae_weights.safetensors"):
        if not (folder / needed).is_file():
            raise LoadError(f"cannot read SAE folder {folder}: {needed} is missing")
    _check_hook_z_cfg(folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sae = SAE.load_from_disk(folder, device=device, dtype=dtype)
    except Exception as exc:
        raise LoadError(
            f"cannot read SAE folder {folder}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return sae, {
        "release": None,
        "sae_id": None,
        "path": str(folder.resolve()),
        "neuronpedia_id": sae.cfg.metadata.neuronpedia_id,
    }


def _check_hook_z_cfg(folder: Path) -> None:
    """sae_lens refuses a hook_z SAE on another hook deep inside its constructor; say it plainly first."""
    try:
        raw = json.loads((folder / "cfg.json").read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot read SAE folder {folder}: cfg.json: {exc}") from None
    hook = raw.get("hook_name") or (raw.get("metadata") or {}).get("hook_name") or ""
    if raw.get("reshape_activations") == "hook_z" and not hook.endswith("hook_z"):
        raise LoadError(f"SAE {folder} is a hook_z SAE (reshape_activations hook_z) but reads {hook!r}")


# Registry of SAE sources, keyed by SaeSpec.source.
SAE_LOADERS: dict[str, Callable[[SaeSpec, str, str], tuple[Any, dict[str, Any]]]] = {
    "release": _load_release_sae,
    "path": _load_local_sae,
}


def load_sae(spec: SaeSpec, device: str, dtype: str) -> SaeSite:
    """Load one SAE and describe where it came from (release/id or path, weights hash)."""
    try:
        loader = SAE_LOADERS[spec.source]
    except KeyError:
        raise LoadError(f"unknown SAE source {spec.source!r}; choose from {', '.join(SAE_LOADERS)}")
    sae, where = loader(spec, device, dtype)
    cfg = sae.cfg
    hook_name = cfg.metadata.hook_name
    if not hook_name:
        raise LoadError(f"SAE {spec.describe()} has no hook_name in its config")
    if cfg.metadata.hook_head_index is not None:
        raise LoadError(f"SAE {spec.describe()} reads a single attention head; not supported")
    if cfg.normalize_activations not in ("none", None):
        raise LoadError(
            f"SAE {spec.describe()} uses normalize_activations={cfg.normalize_activations!r}; "
            "only SAEs without input normalization are supported (fold it into the weights first)"
        )
    hook_out = cfg.metadata.hook_name_out
    is_transcoder = hasattr(cfg, "d_out")
    kind, layer = site_of(hook_name, hook_out, is_transcoder, spec.describe())
    if getattr(cfg, "reshape_activations", "none") == "hook_z" and kind != "attn_z":
        raise LoadError(f"SAE {spec.describe()} is a hook_z SAE (reshape_activations hook_z) but reads {hook_name!r}")
    state = {k: v for k, v in sae.state_dict().items()}
    provenance = {
        **where,
        "layer": layer,
        "site_kind": kind,
        "hook_name": hook_name,
        "d_in": int(cfg.d_in),
        "d_sae": int(cfg.d_sae),
        "architecture": cfg.architecture(),
        "sha256": _tensor_sha256(state),
        "config": _jsonable(cfg.to_dict()),
    }
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return SaeSite(layer, hook_name, sae, provenance, kind, hook_out if kind == "transcoder" else None)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def load_saes(specs: tuple[SaeSpec, ...] | list[SaeSpec], device: str, dtype: str) -> list[SaeSite]:
    """Load SAEs and order them by their place in the forward pass (ingest/sites.py); two SAEs
    at one place (one residual stream, one hook_z, one MLP output) are an error."""
    for spec in specs:  # every name is checked before anything is downloaded
        if spec.source == "release":
            check_release_spec(spec)
    sites = [load_sae(spec, device, dtype) for spec in specs]
    sites.sort(key=lambda s: s.order)
    for a, b in zip(sites, sites[1:]):
        if a.order == b.order:
            same = "hook" if a.hook_name == b.hook_name else f"{'residual stream' if a.site_kind == 'resid' else 'MLP output'}"
            raise LoadError(
                f"two SAEs on one {same}: layer {a.layer}{'' if a.site_kind == 'resid' else ' (' + a.site_kind + ')'} is read by both "
                f"{_describe(a)} ({a.hook_name}) and {_describe(b)} ({b.hook_name})"
            )
    return sites


def _describe(site: SaeSite) -> str:
    p = site.provenance
    return p["path"] if p["path"] else f"{p['release']}/{p['sae_id']}"


# ---------------------------------------------------------------------------- model


def model_kwargs_from_saes(spec: ModelSpec, sites: list[SaeSite]) -> dict[str, bool]:
    """Processing flags for the model: the spec's, overridden by the SAEs'
    ``model_from_pretrained_kwargs`` (which must agree with each other)."""
    flags = {k: getattr(spec, k) for k in MODEL_PROCESSING_KEYS}
    chosen: dict[str, tuple[Any, str]] = {}
    for site in sites:
        extra = site.sae.cfg.metadata.model_from_pretrained_kwargs or {}
        for key, value in extra.items():
            if key in chosen and chosen[key][0] != value:
                raise LoadError(
                    f"SAEs disagree on how to load the model: {chosen[key][1]} wants {key}={chosen[key][0]}, "
                    f"{_describe(site)} wants {key}={value}"
                )
            chosen[key] = (value, _describe(site))
    unknown = set(chosen) - set(MODEL_PROCESSING_KEYS)
    if unknown:
        raise LoadError(f"SAE model_from_pretrained_kwargs has unsupported keys: {sorted(unknown)}")
    flags.update({k: bool(v[0]) for k, v in chosen.items()})
    return flags


def _files_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".bin") or f.name == "config.json"):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _load_local_model(folder: Path, flags: dict[str, bool], device: str, dtype: torch.dtype) -> Any:
    """A local Hugging Face folder, processed as ``from_pretrained`` would process a hub model.

    transformer_lens 3.x ``from_pretrained`` only takes official names, so the config and
    state dict are built with ``transformer_lens.loading_from_pretrained`` directly.
    """
    import transformer_lens.loading_from_pretrained as tl_loading
    from sae_lens import HookedSAETransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise LoadError(f"cannot read model folder {folder}: config.json is missing")
    try:
        raw_cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot read model folder {folder}: config.json: {exc}") from None
    if raw_cfg.get("model_type") == "gpt2" and "n_ctx" not in raw_cfg:
        # transformer_lens reads n_ctx, which transformers >= 5 no longer writes by default.
        raise LoadError(
            f"cannot read model folder {folder}: config.json lacks n_ctx; add "
            f'"n_ctx": {raw_cfg.get("n_positions", 1024)} (the model\'s n_positions)'
        )
    try:
        cfg = tl_loading.get_pretrained_model_config(
            str(folder), fold_ln=flags["fold_ln"], device=device, dtype=dtype
        )
        hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        state_dict = tl_loading.get_pretrained_state_dict(str(folder), cfg, hf_model=hf_model, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(
            f"cannot read model folder {folder}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    del hf_model
    model = HookedSAETransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=flags["fold_ln"],
        center_writing_weights=flags["center_writing_weights"],
        center_unembed=flags["center_unembed"],
    )
    return model.to(device)


def _load_hub_model(name: str, flags: dict[str, bool], device: str, dtype: torch.dtype) -> Any:
    from sae_lens import HookedSAETransformer

    try:
        return HookedSAETransformer.from_pretrained(name, device=device, dtype=dtype, **flags)
    except Exception as exc:
        raise LoadError(
            f"could not load model {name!r} (a transformer_lens model name or a local folder): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def model_source(spec: ModelSpec) -> str:
    """``path`` when the name is an existing folder (or looks like a path), else ``hub``."""
    p = Path(spec.name_or_path)
    if p.exists() or spec.name_or_path.startswith((".", "/", "~")):
        return "path"
    return "hub"


def load_model(spec: ModelSpec, flags: dict[str, bool], device: str, dtype: str) -> tuple[Any, dict[str, Any]]:
    """Load the model in eval mode, gradients off; return it with its provenance."""
    td = torch_dtype(dtype)
    if model_source(spec) == "path":
        folder = Path(spec.name_or_path).expanduser()
        if not folder.is_dir():
            raise LoadError(f"cannot read model folder {folder}: not a directory")
        with _quiet():
            model = _load_local_model(folder, flags, device, td)
        provenance = {"model_source": "path", "model": str(folder.resolve()), "model_sha256": _files_sha256(folder)}
    else:
        with _quiet():
            model = _load_hub_model(spec.name_or_path, flags, device, td)
        provenance = {"model_source": "hub", "model": spec.name_or_path, "model_sha256": None}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if model.tokenizer is None:
        raise LoadError(f"model {spec.name_or_path} has no tokenizer")
    if model.cfg.positional_embedding_type == "shortformer":
        raise LoadError("shortformer models are not supported by the sweep")
    return model, provenance


class _quiet:
    """Silence the libraries' progress chatter (featuregraph reports its own progress)."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self._redirect = contextlib.redirect_stdout(io.StringIO())
        self._redirect.__enter__()
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        self._warn.__exit__(*exc)
        self._redirect.__exit__(*exc)


def check_fit(model: Any, sites: list[SaeSite], model_name: str) -> None:
    """SAE hooks and widths must match the model (``d_in``, and a transcoder's ``d_out``)."""
    hooks = set(model.hook_dict)
    for site in sites:
        for hook in filter(None, (site.hook_name, site.hook_out)):
            if hook not in hooks:
                raise LoadError(
                    f"unknown hook {hook!r} for SAE {_describe(site)}: model {model_name} has "
                    f"{model.cfg.n_layers} layers (blocks.0 to blocks.{model.cfg.n_layers - 1})"
                )
        width = hook_width(model.cfg, site.site_kind)
        what = "n_heads * d_head" if site.site_kind == "attn_z" else "d_model"
        widths = [("reads", site.provenance["d_in"], site.hook_name)]
        if site.site_kind == "transcoder":
            widths.append(("writes", int(site.sae.cfg.d_out), site.hook_out))
        for verb, d, hook in widths:
            if d != width:
                raise LoadError(
                    f"wrong SAE width: SAE {_describe(site)} {verb} vectors of size {d} but model "
                    f"{model_name} has {what} {width} at {hook}"
                )
        if site.hook_name.endswith("hook_mlp_in"):
            model.set_use_hook_mlp_in(True)  # transformer_lens only calls this hook when asked to


def prepend_bos_from_saes(sites: list[SaeSite], override: bool | None) -> bool:
    """Whether to prepend BOS: the caller's choice, else the SAEs' metadata (which must agree)."""
    if override is not None:
        return override
    values = {s.hook_name: s.sae.cfg.metadata.prepend_bos for s in sites}
    known = {v for v in values.values() if v is not None}
    if len(known) > 1:
        raise InputError(f"SAEs disagree on prepend_bos: {values}; pass --prepend-bos or --no-prepend-bos")
    return known.pop() if known else True


@dataclass
class Loaded:
    """A model and its SAE sites, ready to sweep."""

    model: Any
    sites: list[SaeSite]
    model_provenance: dict[str, Any]
    flags: dict[str, bool]
    device: str
    dtype: str
    prepend_bos: bool


def load_all(model_spec: ModelSpec, sae_specs, device: str, dtype: str, prepend_bos: bool | None) -> Loaded:
    """Load SAEs first (their metadata says how to load the model), then the model; check the fit."""
    device = resolve_device(device)
    sites = load_saes(list(sae_specs), device, dtype)
    flags = model_kwargs_from_saes(model_spec, sites)
    model, provenance = load_model(model_spec, flags, device, dtype)
    check_fit(model, sites, model_spec.name_or_path)
    bos = prepend_bos_from_saes(sites, prepend_bos)
    return Loaded(model, sites, provenance, flags, device, dtype, bos)
