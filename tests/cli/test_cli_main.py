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
