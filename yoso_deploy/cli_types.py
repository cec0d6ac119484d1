"""Click parameter types shared by the command modules (cli.py, cli_serving.py)."""

from __future__ import annotations

import os

import click


class ExpandedPath(click.Path):
    """``click.Path`` that expands a leading ``~`` (``--model=~/x`` reaches us unexpanded by the shell)."""

    def convert(self, value, param, ctx):
        if isinstance(value, (str, os.PathLike)):
            value = os.path.expanduser(os.fspath(value))
        return super().convert(value, param, ctx)
