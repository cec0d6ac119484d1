"""Click parameter types and the options every command spells the same way (``--model``, ``--output``, ...).

An export directory is ``--model`` / ``-m`` everywhere, defaulting to where ``scripts/main.sh`` and a bare
``yoso-deploy export`` put the default export (:data:`yoso_deploy.constants.DEFAULT_EXPORT_DIR`); what a
command writes is ``--output`` / ``-o``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..constants import DEFAULT_EXPORT_DIR


class ExpandedPath(click.Path):
    """``click.Path`` that expands a leading ``~`` (``--model=~/x`` reaches us unexpanded by the shell)."""

    def convert(self, value, param, ctx):
        if isinstance(value, (str, os.PathLike)):
            value = os.path.expanduser(os.fspath(value))
        return super().convert(value, param, ctx)


def model_option(what: str = "Export directory (from 'yoso-deploy export')"):
    """``--model/-m EXPORT_DIR``, default :data:`~yoso_deploy.constants.DEFAULT_EXPORT_DIR`."""
    return click.option("--model", "-m", "model_dir", type=ExpandedPath(path_type=Path), default=DEFAULT_EXPORT_DIR,
                        show_default=True, help=f"{what}.")


def output_option(what: str, required: bool = False, default=None, dir_okay: bool = True, show_default=False):
    """``--output/-o PATH``."""
    return click.option("--output", "-o", "output", type=ExpandedPath(path_type=Path, dir_okay=dir_okay),
                        required=required, default=default, show_default=show_default, help=f"{what}.")


def threads_option(what: str = "ONNX Runtime intra-op threads (default: all cores)"):
    return click.option("--threads", type=click.IntRange(min=0), default=None, help=f"{what}.")


def allow_failed_option(verb: str = "Use"):
    return click.option("--allow-failed-export", is_flag=True,
                        help=f"{verb} an export whose post-export parity check failed.")


def verbose_option(what: str = "Show details (full tables, libraries' logs)"):
    return click.option("--verbose", "-v", is_flag=True, help=f"{what}.")


def int_list(value: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, e.g. 1,4") from None
    if not out or any(v < 1 for v in out):
        raise click.BadParameter(f"{what} must list positive integers, e.g. 1,4")
    return out


def comma_list(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def range3(value: str, what: str) -> tuple[int, int, int]:
    vals = int_list(value, what)
    if len(vals) != 3 or not vals[0] <= vals[1] <= vals[2]:
        raise click.BadParameter(f"{what} must be min,opt,max with min <= opt <= max, e.g. 1,128,512")
    return vals[0], vals[1], vals[2]


def say(message: str) -> None:
    """Progress and notes go to stderr; results to stdout."""
    click.echo(message, err=True)
