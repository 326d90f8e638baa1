"""The ``gazeprep`` command line (typer).

Commands live in ``gazeprep/commands/<area>.py``; each module exposes ``register(app)``. Command
bodies are thin: they parse options and call the library.

Exit status (the contract every command follows; :func:`main` enforces it):

====  ==========================================================================================
0     success
1     a domain error (:class:`~gazeprep.errors.GazeprepError`: bad input file, bad recipe, missing
      extra, ...): one ``error: ...`` line on stderr; or an unexpected internal error: one
      ``error: internal error: ...`` line naming a file that holds the full traceback
2     a usage error: unknown command or option, missing or invalid value, number out of range,
      ``--out`` naming an existing file. click's short usage message (with its "Did you mean"
      hint and the ``--help`` pointer) on stderr. ``gazeprep`` with no arguments prints the help on
      stderr and also exits 2, as click does for groups that need a command (``no_args_is_help``)
130   interrupted (Ctrl-C, SIGINT): ``interrupted: ...`` on stderr; nothing half-written is committed
      and rerunning the same command resumes
141   stdout was closed early (``gazeprep recipes | head -1``): exits quietly, like ``128 + SIGPIPE``
====  ==========================================================================================

``gazeprep --debug COMMAND ...`` (``--debug`` may also come after the command; or ``GAZEPREP_DEBUG=1``) also prints the full traceback of a domain,
internal or interrupt error, with the same exit status.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import select
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from gazeprep._version import __version__
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

PROG_NAME = "gazeprep"
DEBUG_ENV = "GAZEPREP_DEBUG"
"""Set to ``1`` to print full tracebacks (same as ``gazeprep --debug``)."""
TRACEBACK_DIR_ENV = "GAZEPREP_TRACEBACK_DIR"
"""Folder for the traceback files of internal errors (default: the user cache folder)."""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


# --- click exception classes -------------------------------------------------------------------------
# typer >= 0.2x vendors click as ``typer._click`` and raises those classes; older typer raised click's
# own. Catch both, whichever are importable.


def _click_exception_modules() -> list[Any]:
    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            continue
    return mods


_CLICK_MODS = _click_exception_modules()
_CLICK_EXCEPTION = tuple({m.ClickException for m in _CLICK_MODS})
_EXIT = tuple({typer.Exit, *(m.Exit for m in _CLICK_MODS if hasattr(m, "Exit"))})
_ABORT = tuple({typer.Abort, *(m.Abort for m in _CLICK_MODS if hasattr(m, "Abort"))})


# --- help that reads well ---------------------------------------------------------------------------


class _RoundedFloat(float):
    """A float default that prints with 4 significant digits in ``--help`` (its value is unchanged)."""

    def __str__(self) -> str:
        return f"{float(self):.4g}"

    __repr__ = __str__


_METAVARS = {bool: "", str: "TEXT", int: "INT", float: "FLOAT", Path: "PATH"}


def _metavar_of(param: Any) -> str | None:
    """A readable metavar (``PATH``, ``INT``, ``a|b``) for a typer parameter, or None to keep typer's."""
    if getattr(param, "is_flag", False):
        return ""
    desc = getattr(param, "type_descriptor", None)  # typer >= 0.2x; older typer shows click's metavars
    if desc is None:
        return None
    if getattr(desc, "is_choice", False) and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    ann = desc.annotation
    args = getattr(ann, "__args__", None)
    if getattr(ann, "__origin__", None) is list and args:
        ann = args[0]
    for kind, label in _METAVARS.items():
        if isinstance(ann, type) and issubclass(ann, kind):
            return label
    return None


def _tidy_param(param: Any) -> None:
    if getattr(param, "param_type_name", "") == "argument":
        label = _metavar_of(param)
        if param.metavar is None:
            param.metavar = (param.name or "").upper()
        if label and hasattr(param, "display_type_rich"):  # typer 0.2x: ``<path>`` -> ``PATH``
            param.display_type_rich = lambda ctx, _l=label: _l
        shown = param.metavar if param.required else f"[{param.metavar}]"
        if param.nargs != 1:
            shown += "..."
        param.get_usage_pieces = lambda ctx, _s=shown: [_s]  # no ``{name}`` braces in the usage line
    elif param.metavar is None:
        label = _metavar_of(param)
        if label is not None:
            param.metavar = label
    default = getattr(param, "default", None)
    if type(default) is float and len(repr(default)) > 8:
        param.default = _RoundedFloat(default)


def tidy_help(command: Any) -> None:
    """Readable metavars and rounded defaults for every parameter of ``command`` and its subcommands.

    Fills only what the declaration left unset (an explicit ``metavar=`` wins): flags show no
    metavar (typer 0.2x shows ``<bool>``), paths ``PATH``, numbers ``INT``/``FLOAT``, choices ``a|b``,
    repeatable options their element type, arguments their upper-case name without ``{}``; float
    defaults print with 4 significant digits.
    """
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None  # click's plain help: no boxes cutting text, help on stderr when needed
    for param in command.params:
        _tidy_param(param)
    try:
        ctx = command.context_class(command, info_name=command.name)
        help_opt = command.get_help_option(ctx)
    except (AttributeError, TypeError):  # a typer/click without this API keeps its own help option
        help_opt = None
    if help_opt is not None:
        help_opt.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


class GazeprepGroup(TyperGroup):
    """The root group: applies :func:`tidy_help` to the whole command tree once it is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_help(self)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:  # typer appends the completion options after __init__
            _tidy_param(param)
        return params


app = typer.Typer(
    name=PROG_NAME,
    cls=GazeprepGroup,
    help="Gaze ground truth for chest X-ray eye-tracking datasets (REFLACX, EGD-CXR, MIMIC-CXR).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gazeprep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar=DEBUG_ENV,
        show_envvar=True,
        help="On an error, also print the full Python traceback (may also follow the command).",
    ),
) -> None:
    """gazeprep: raw release folders -> validated, reproducible gaze heatmaps -> trained models.

    Exit status: 0 ok, 1 error (one `error:` line), 2 usage error, 130 interrupted.
    """


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


# --- the boundary -----------------------------------------------------------------------------------


def _traceback_dir() -> Path:
    env = os.environ.get(TRACEBACK_DIR_ENV)
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gazeprep" / "tracebacks"


def save_traceback(exc: BaseException, argv: list[str]) -> Path:
    """Write the full traceback of ``exc`` (and the command line) to a new file; return its path.

    The file goes to ``$GAZEPREP_TRACEBACK_DIR``, else ``$XDG_CACHE_HOME/gazeprep/tracebacks`` (default
    ``~/.cache/...``), else the system temporary folder when that one cannot be written.
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (
        f"gazeprep {__version__}, python {sys.version.split()[0]}\n"
        f"command: {' '.join([PROG_NAME, *argv])}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    for folder in (_traceback_dir(), Path(tempfile.gettempdir()) / "gazeprep-tracebacks"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"traceback-{stamp}-", suffix=".txt", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return Path(name)
        except OSError:
            continue
    raise OSError("no writable folder for the traceback file")


INTERRUPTED_MESSAGE = (
    "interrupted: stopped before finishing, nothing incomplete was committed; rerun the same command to resume"
)


def _report_interrupt() -> None:
    """Print the one ``interrupted:`` line on a line of its own.

    One Ctrl-C can raise twice: polars turns SIGINT into a KeyboardInterrupt inside its Rust code and
    Python's own handler raises again at the next bytecode, often inside a ``finally`` that was closing
    a progress bar. The bar is then left open mid-line, so the line goes through ``tqdm.write``, which
    clears open bars first. A further Ctrl-C while reporting is ignored.
    """
    from tqdm import tqdm

    from gazeprep.pipeline.executor import sigint_ignored

    with sigint_ignored():
        tqdm.write(INTERRUPTED_MESSAGE, file=sys.stderr)


def _one_line(text: object) -> str:
    """``str(text)`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def _stdout_is_broken() -> bool:
    """True when nobody reads stdout any more (``| head`` exited): a BrokenPipeError from a pipe of
    our own (a worker's) is a bug to report, not a reason to exit quietly."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0)):
            return True
    except (AttributeError, OSError, ValueError):  # no poll() here, or stdout is not a real file
        pass
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not complain again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _show_click_error(exc: Any) -> None:
    """click's usage-error message (usage line, ``Try '... --help'``, ``Error: ...``) with the message
    kept on one line (click lists a missing choice's values one per line)."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" or ctx is None:
        exc.show()  # the help itself, or an error without a command context
        return
    text = ctx.get_usage() + "\n"
    if ctx.command.get_help_option(ctx) is not None:
        text += f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.\n"
    text += f"\nError: {_one_line(exc.format_message())}"
    typer.echo(text, err=True)


def _completion_requested() -> bool:
    var = f"_{PROG_NAME}_COMPLETE".replace("-", "_").upper()
    return var in os.environ


def run(argv: list[str] | None = None) -> int:
    """Run one command line and return its exit status (see the module docstring); never raises
    except :class:`SystemExit` from a shell-completion request."""
    args = list(sys.argv[1:] if argv is None else argv)
    if _completion_requested():  # shell completion: typer's own machinery, then exit
        app(prog_name=PROG_NAME)
        return 0
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    end = args.index("--") if "--" in args else len(args)
    if "--debug" in args[1:end]:  # accepted after the command too: `gazeprep build-heatmaps ... --debug`
        debug = True
        args = [a for i, a in enumerate(args) if not (a == "--debug" and 0 < i < end)]
    command = typer.main.get_command(app)
    try:
        with command.make_context(PROG_NAME, args) as ctx:
            debug = debug or bool(ctx.params.get("debug"))
            command.invoke(ctx)
        return 0
    except _EXIT as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except _CLICK_EXCEPTION as exc:  # usage errors: click's usage line, "Did you mean", --help pointer
        _show_click_error(exc)
        return int(exc.exit_code)
    except (KeyboardInterrupt, *_ABORT):
        if debug:
            traceback.print_exc()
        _report_interrupt()
        return EXIT_INTERRUPTED
    except GazeprepError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {_one_line(exc)}", err=True)
        return EXIT_ERROR
    except BrokenPipeError as exc:
        if _stdout_is_broken():
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        return _internal_error(exc, args, debug)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: one line + saved traceback, never a dump
        return _internal_error(exc, args, debug)


def _internal_error(exc: BaseException, args: list[str], debug: bool) -> int:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    what = f"{type(exc).__name__}: {_one_line(exc)}" if str(exc) else type(exc).__name__
    try:
        where = f"traceback saved to {save_traceback(exc, args)}"
    except OSError as save_exc:
        where = f"traceback not saved: {save_exc}; rerun with --debug to see it"
    typer.echo(f"error: internal error: {what} ({where})", err=True)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the command line; exit with its status when it is not 0
    (:class:`SystemExit`), return normally on success."""
    code = run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = code or EXIT_BROKEN_PIPE
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
