"""Command-line entry points of the query layer, registered on the main ``featuregraph`` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the query layer's commands (``query``, ``sql``) to ``app``."""
