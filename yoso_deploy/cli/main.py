"""The ``yoso-deploy`` group: one error boundary, quiet library loggers, and the commands of each module.

Errors: a :class:`~yoso_deploy.errors.YosoDeployError` is printed as one line ``error: <what> — <fix>`` and
exits 2 (a missing optional dependency becomes the ``pip install 'yoso-deploy[extra]'`` that provides it); a
:class:`~yoso_deploy.errors.CheckFailedError` -- a check that ran and failed -- prints ``FAILED: ...`` and
exits 1; anything else is a bug in yoso-deploy and keeps its traceback. ``--debug`` shows every traceback.

Start-up imports only click and the shared light modules: every command imports what it needs after its
arguments are parsed, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import difflib
import os
import sys

import click

from ..constants import __version__
from ..errors import CheckFailedError, YosoDeployError


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class YosoGroup(click.Group):
    """The error boundary of every command (module doc), and suggestions for a misspelled command."""

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            name = args[0] if args else ""
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.5)
            if close and not name.startswith("-"):
                raise click.UsageError(f"No such command {name!r}. Did you mean {close[0]!r}?", ctx) from e
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - the CLI's one error boundary
            from ..errors import COMMAND_EXTRAS, missing_extra

            sub = ctx.invoked_subcommand
            extra = missing_extra(e, f"'yoso-deploy {sub}'" if sub else None, COMMAND_EXTRAS.get(sub))
            if (ctx.obj or {}).get("debug") or (extra is None and not isinstance(e, YosoDeployError)):
                raise  # a bug: keep the traceback
            if isinstance(e, CheckFailedError):
                click.echo(f"FAILED: {_one_line(e)}", err=True)
                ctx.exit(1)
            click.echo(f"error: {_one_line(extra if extra is not None else e)}", err=True)
            ctx.exit(2)


def _quiet_libraries():
    """Offline, no progress bars, errors only -- without importing transformers (start-up time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # already imported (in-process callers): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


@click.group(cls=YosoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="yoso-deploy")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx, debug):
    """Deploy YOSO models: export to ONNX with the com.yoso custom ops, check, quantize, run and serve them.

    \b
    Typical use:
      yoso-deploy export                                   # the embedded default model -> out/qa
      yoso-deploy qa --question "Where?" --context "..."   # answers with out/qa
      yoso-deploy serve                                    # HTTP on 127.0.0.1:8000

    Exit codes: 0 done, 1 a check failed (or a bug, with its traceback), 2 an error the message names.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _quiet_libraries()


def _register() -> None:
    from . import check, engine, export, run, serving

    for module in (export, check, run, engine, serving):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
