"""The ``gazeprep`` command line (typer).

Commands live in ``gazeprep/commands/<area>.py``; each module exposes ``register(app)``. Command
bodies are thin: they parse options and call the library. A :class:`~gazeprep.errors.GazeprepError`
prints one line (``error: ...``) on stderr and exits with status 1, without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from gazeprep import __version__
from gazeprep.errors import GazeprepError

COMMAND_MODULES = (
    "gazeprep.commands.synth",
    "gazeprep.commands.ingest",
    "gazeprep.commands.text",
    "gazeprep.commands.build",
    "gazeprep.commands.anatomy",
    "gazeprep.commands.evaluate",
    "gazeprep.commands.train",
    "gazeprep.commands.inspect",
)

app = typer.Typer(
    name="gazeprep",
    help="Gaze ground truth for chest X-ray eye-tracking datasets (REFLACX, EGD-CXR, MIMIC-CXR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gazeprep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """gazeprep: raw release folders -> validated, reproducible gaze heatmaps -> trained models."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning domain errors into one-line messages."""
    try:
        app(args=argv, standalone_mode=False)
    except GazeprepError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit codes
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
