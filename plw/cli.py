"""The `plw` command line. Each package registers its own commands (see `*/commands.py`).

Command modules import heavy libraries (torch, transformers) inside the command bodies, so
`plw --help` stays fast.
"""

from __future__ import annotations

import inspect
import os
import sys

import typer

from plw import __version__
from plw.errors import PLWError

app = typer.Typer(
    name="plw",
    help=(
        "plw — train language models with a prompt loss weight (PLW), measure instruction data, "
        "run PLW sweeps and analyse them as in Huerta-Enochian & Ko (EMNLP 2024).\n\n"
        "Completion tokens weigh 1 in the loss and prompt tokens weigh PLW ∈ [0, 1] "
        "(0 = prompt masking, 1 = full-sequence training). Short-completion data "
        "(R_g < 1) are where PLW matters; `plw recommend DATA` suggests a value."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"plw {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """plw command line."""


def _register_all() -> None:
    from plw.data import commands as data_commands
    from plw.train import commands as train_commands
    from plw.eval import commands as eval_commands
    from plw.experiment import commands as experiment_commands
    from plw.analysis import commands as analysis_commands
    from plw.serve import commands as serve_commands

    for module in (data_commands, train_commands, eval_commands, experiment_commands,
                   analysis_commands, serve_commands):
        module.register(app)


def _reflow(text: str) -> str:
    """One line per paragraph: rich help keeps a docstring's line breaks, so a paragraph wrapped at
    100 columns in the source would print as ragged lines at 80."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = _reflow(command.callback.__doc__)
    for group in typer_app.registered_groups:
        _reflow_help(group.typer_instance)


_register_all()
_reflow_help(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        # Without standalone mode click returns typer.Exit's code instead of raising it.
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int):
            return rc
    except PLWError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except (typer.Exit, SystemExit) as err:  # --help, --version, typer.Exit(code)
        code = getattr(err, "exit_code", getattr(err, "code", 0))
        return int(code or 0)
    except OSError as err:  # an unreadable input or unwritable output path: one line, not a traceback
        if os.environ.get("PLW_DEBUG"):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # click usage errors (typer vendors its own click) carry code and message
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            return err.exit_code
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
