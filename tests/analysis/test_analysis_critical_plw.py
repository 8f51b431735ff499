"""The critical PLW and its confidence interval are clamped to [0, 1]."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from plw.analysis.glmm import critical_plw

@pytest.mark.parametrize("b1,b2,inside", [(2.4, -1.0, False), (0.5, 1.0, False), (1.0, -1.0, True)])
def test_critical_plw_and_ci_are_clamped(b1, b2, inside):
    fit = SimpleNamespace(fixef={"intercept": 0.0, "wp": b1, "wp2": b2},
                          cov_fixef=np.diag([0.01, 0.001, 0.0001]))
    c = critical_plw(fit, 0.30103)
    lo, hi = c["ci"]
    assert 0 <= c["critical_plw"] <= 1
    assert 0 <= lo <= hi <= 1
    assert c["inside_range"] is inside
    if b1 == 2.4:
        assert c["critical_plw"] == 1.0 and lo == hi == 1.0
