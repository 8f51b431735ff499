"""The `plw` entry point: help, version, exit codes."""

from __future__ import annotations

import typer

from plw.cli import app, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("stats", "invert", "train", "eval", "sweep", "results", "analyze", "recommend"):
        assert command in out


def test_typer_exit_code_is_returned():
    @app.command("zz-exit-probe", hidden=True)
    def _probe() -> None:
        raise typer.Exit(3)

    assert main(["zz-exit-probe"]) == 3


def test_os_error_is_one_line_exit_2(capsys):
    @app.command("zz-oserror-probe", hidden=True)
    def _probe() -> None:
        open("/nonexistent-dir/x.json", "w")

    assert main(["zz-oserror-probe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: /nonexistent-dir/x.json: No such file or directory"]


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2


def test_bad_flag_is_a_usage_error_not_a_traceback(capsys):
    assert main(["stats", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --no-such-flag" in err and "Traceback" not in err


def _commands(typer_app, prefix=()):
    for command in typer_app.registered_commands:
        yield prefix + (command.name or command.callback.__name__,), command
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance, prefix + (group.name,))


def test_command_help_wraps_as_paragraphs_at_80_columns(capsys, monkeypatch):
    """A docstring's source line breaks would print as ragged lines: each paragraph is one line,
    and rich wraps it to the terminal."""
    from plw.cli import app

    monkeypatch.setenv("COLUMNS", "80")
    for path, command in _commands(app):
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, (path, paragraph)
    assert main(["train", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    start = next(i for i, line in enumerate(lines) if "Writes config.yaml" in line)
    assert len(lines[start].rstrip()) > 60 and len(lines[start + 1].rstrip()) > 60


def test_first_line_quotes_a_library_error_in_one_line():
    from plw.errors import first_line

    assert first_line(OSError("no such file\nTraceback noise")) == "no such file"
    assert first_line(KeyError()) == "KeyError"  # an empty message: the type, not an IndexError
