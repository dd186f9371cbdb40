"""A fake Hugging Face hub cache, so the real hub-loading code runs offline.

Files are laid out the way huggingface_hub stores downloads
(``models--OWNER--NAME/snapshots/REV/...`` plus ``refs/main``); with ``HF_HUB_OFFLINE=1``
and ``HF_HUB_CACHE`` pointing here, ``hf_hub_download`` and ``from_pretrained`` read them
as if they had been downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REVISION = "0" * 40


def add_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Place ``files`` (name in repo -> local file) in the cache as ``repo_id``'s main revision."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    for name, src in files.items():
        dst = snapshot / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def add_folder(cache: Path, repo_id: str, folder: Path, prefix: str = "") -> Path:
    """Place every file of ``folder`` under ``prefix`` in ``repo_id``."""
    files = {f"{prefix}{f.name}": f for f in Path(folder).iterdir() if f.is_file()}
    return add_repo(cache, repo_id, files)
