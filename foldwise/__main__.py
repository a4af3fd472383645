"""`python -m foldwise` is the `foldwise` command."""

from foldwise.cli import app

app()
