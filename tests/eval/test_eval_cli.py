"""`plw eval MODEL_DIR`: a saved tiny model evaluated from the command line."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from plw.errors import PLWError
from plw.eval import commands


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    commands.register(app)
    return app


def test_eval_command_on_a_saved_model(tmp_path, eval_model, eval_tokenizer):
    eval_model.save_pretrained(tmp_path / "model")
    eval_tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(_app(), ["eval", str(tmp_path / "model"), "--suite", "builtin_mc",
                                         "--limit", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(r["benchmark"], r["metric"], r["group"]) for r in rows] == [("builtin_mc", "acc", "mc")]
    assert "builtin_mc" in result.output


def test_eval_command_bad_model_path(tmp_path):
    with pytest.raises(PLWError) as err:
        commands.load_model(str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in err.value.one_line()
