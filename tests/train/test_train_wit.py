"""WIT parity: completion_loss_weight (λr) wherever the PLW is — config, CLI and sweeps (PLW × λr)."""

from __future__ import annotations

import pytest

from plw.errors import PLWError
from plw.train.config import load_config


def test_config_and_flags_carry_lambda_r_and_encoder_options():
    cfg = load_config(None, [], flags=[("--completion-loss-weight", "completion_loss_weight", 0.8),
                                       ("--normalizer", "normalizer", "nonzero_tokens"),
                                       ("--role-weights", "role_weights", {"system": "0", "user": "0.2"}),
                                       ("--last-turn-only/--all-turns", "last_turn_only", True),
                                       ("--on-long-completion", "on_long_completion", "truncate")])
    assert cfg.completion_loss_weight == 0.8 and cfg.normalizer == "nonzero_tokens"
    assert cfg.role_weights == {"system": 0.0, "user": 0.2}
    assert cfg.last_turn_only and cfg.on_long_completion == "truncate"
    with pytest.raises(PLWError, match="--completion-loss-weight: completion_loss_weight"):
        load_config(None, [], flags=[("--completion-loss-weight", "completion_loss_weight", 1.5)])
    with pytest.raises(PLWError, match="on_long_completion"):
        load_config(None, ["on_long_completion=cut"])


def test_cli_refuses_bad_role_weights(capsys, tmp_path):
    from plw.cli import main

    assert main(["train", "--role-weights", "user", "-o", str(tmp_path / "out")]) == 2
    assert "--role-weights" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_sweep_crosses_plw_and_lambda_r(tmp_path):
    from plw.experiment.grid import expand
    from plw.experiment.spec import load_spec

    spec = tmp_path / "wit.yaml"
    spec.write_text("models: [builtin:tiny]\ndatasets: [builtin:short]\nplw: [0, 0.2, 1]\n"
                    "regularizers:\n"
                    "  - {name: lr1, train: {completion_loss_weight: 1.0}}\n"
                    "  - {name: lr08, train: {completion_loss_weight: 0.8, normalizer: nonzero_tokens}}\n")
    runs = expand(load_spec(spec))
    cells = {(r.plw, r.train_config("d", "o")["completion_loss_weight"]) for r in runs}
    assert cells == {(p, lr) for p in (0, 0.2, 1) for lr in (1.0, 0.8)}
    assert len({r.run_id for r in runs}) == 6
    spec.write_text("models: [builtin:tiny]\ndatasets: [builtin:short]\nplw: [0]\n"
                    "regularizers:\n  - {name: bad, train: {completion_loss_weight: 2}}\n")
    with pytest.raises(PLWError, match="completion_loss_weight"):
        load_spec(spec)
