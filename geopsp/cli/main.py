"""The ``geopsp`` command group: global options, lazy sub-commands, error mapping.

Sub-command modules are imported only when invoked, and they import torch lazily, so
``geopsp --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import click

from geopsp import __version__
from geopsp.core.errors import GeopspError

COMMANDS = {
    "export-chips": ("geopsp.cli.export_chips", "Cut training chips from rasters and labels."),
    "train": ("geopsp.cli.train", "Train a PSPNet on chip folders."),
    "classify": ("geopsp.cli.classify", "Classify rasters of any size with a trained model."),
    "evaluate": ("geopsp.cli.evaluate", "Score a classified raster against reference labels."),
    "vectorize": ("geopsp.cli.vectorize", "Polygons per class out of a class raster."),
    "info": ("geopsp.cli.info", "Describe a geopsp model file."),
    "export-model": (
        "geopsp.cli.export_model",
        "Export a model for ArcGIS Pro (.dlpk), ONNX/QGIS or a STAC catalog.",
    ),
}

log = logging.getLogger("geopsp")


class GeopspGroup(click.Group):
    """A click group that loads commands lazily and reports library errors in one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above: listing commands must not import them.
        with formatter.section("Commands"):
            formatter.write_dl([(n, h) for n, (_, h) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        verbosity = ctx.params.get("verbose", 0)
        from geopsp.core.interrupts import sigint_never_lost, silence_interrupted_finalizers

        try:
            with sigint_never_lost():
                return super().invoke(ctx)
        except GeopspError as exc:
            if verbosity >= 2:
                traceback.print_exc(file=sys.stderr)
            if exc.exit_code == 2:
                raise click.UsageError(str(exc), ctx=None) from None
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            silence_interrupted_finalizers()
            click.echo(interrupted_message(exc), err=True)
            ctx.exit(130)
        except MemoryError:
            if verbosity >= 2:
                traceback.print_exc(file=sys.stderr)
            raise click.ClickException(
                "out of memory; use a smaller --tile-size/--batch-size, or fewer --workers "
                "(--read-threads in classify)"
            ) from None


def interrupted_message(exc: KeyboardInterrupt) -> str:
    """What Ctrl-C left behind: what the command kept for later (``Interrupted``), else that
    its partial outputs were removed."""
    from geopsp.core.errors import Interrupted

    if isinstance(exc, Interrupted):
        return f"Interrupted; kept {', '.join(exc.kept)} ({exc.hint})."
    return "Interrupted; partial outputs were removed."


def setup_logging(verbose: int, quiet: bool) -> None:
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("geopsp")
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)


@click.group(cls=GeopspGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geopsp")
@click.option(
    "-v", "--verbose", count=True, help="More log output on stderr (-vv: debug, with tracebacks)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """geopsp: land-cover, building and water maps from imagery with PSPNet.

    Workflow: export-chips -> train -> classify -> evaluate (vectorize: polygons).
    """
    setup_logging(verbose, quiet)
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet
    ctx.obj["progress"] = not quiet


if __name__ == "__main__":  # pragma: no cover
    cli(prog_name="geopsp")
