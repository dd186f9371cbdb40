"""The dashboard's pages, one module each, each with a ``render(run)`` function."""
