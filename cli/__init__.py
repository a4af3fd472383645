"""The `foldwise` command: the outermost layer, which imports the flows (the core `foldwise` package,
with the configuration model, imports nothing of it)."""

from foldwise.cli.commands import app

__all__ = ["app"]
