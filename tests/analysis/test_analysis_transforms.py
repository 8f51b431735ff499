"""w_p transform, squeeze, aggregates, OLS + Holm and the paper's λ = 0.242."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from plw import P_EXPONENT
from plw.analysis.ols import earlier_model, holm
from plw.analysis.recommend import critical_plw_from_coefficients, from_paper, paper_lambda
from plw.analysis.transforms import (from_wp, minmax, relative_aggregate, simple_aggregate, squeeze,
                                     to_wp)


def test_wp_maps_tenth_to_half_and_endpoints():
    assert to_wp(0.1) == pytest.approx(0.5, abs=1e-12)
    assert to_wp(0.0) == 0.0 and to_wp(1.0) == 1.0
    assert P_EXPONENT == pytest.approx(np.log(0.5) / np.log(0.1), abs=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0))
def test_wp_inverse_roundtrip(x):
    assert from_wp(to_wp(x)) == pytest.approx(x, abs=1e-12)


def test_paper_lambda_is_0242():
    # §5.2: AlpacaDataShort wp 5.590, wp² −4.284 -> vertex 0.652 -> λ = 0.242
    assert round(paper_lambda(), 3) == 0.242
    assert -5.590 / (2 * -4.284) == pytest.approx(0.652, abs=5e-4)
    assert critical_plw_from_coefficients(5.590, -4.284) == pytest.approx(0.652443 ** (1 / P_EXPONENT), rel=1e-4)


def test_paper_recommendations_follow_table5():
    assert from_paper(0.08)["plw"] == 0.155
    assert from_paper(1.0)["plw"] == 0.155
    assert from_paper(1.5)["plw"] == 0.183
    assert from_paper(2.0)["plw"] == 0.239
    long = from_paper(3.27)
    assert long["flat"] and long["confidence"] == "low" and long["source"] == "paper"


def test_squeeze_and_minmax():
    y = np.array([0.0, 0.25, 1.0])
    s = squeeze(y)                      # n = 3
    assert s == pytest.approx([(0 * 2 + 0.5) / 3, (0.25 * 2 + 0.5) / 3, (2 + 0.5) / 3])
    assert np.all((s > 0) & (s < 1))
    assert minmax([2.0, 4.0, 3.0]) == pytest.approx([0, 1, 0.5])
    assert minmax([1.0, 1.0]) == pytest.approx([0.5, 0.5])


def test_aggregates_by_hand():
    df = pd.DataFrame({"model": ["m"] * 4 + ["n"] * 4, "plw": [0, 0, 1, 1] * 2,
                       "benchmark": ["a", "b"] * 4, "score": [0.2, 10, 0.4, 30, 0.6, 20, 0.8, 40]})
    simple = simple_aggregate(df).set_index(["model", "plw"])["simple"]
    assert simple[("m", 0)] == pytest.approx(5.1)
    rel = relative_aggregate(df).set_index(["model", "plw"])["relative"]
    # a: 0.2..0.8 -> 0, 1/3, 2/3, 1; b: 10..40 -> 0, 2/3, 1/3, 1
    assert rel[("m", 0)] == pytest.approx(0.0)
    assert rel[("m", 1)] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert rel[("n", 1)] == pytest.approx(1.0)


def test_ols_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.formula.api")
    rng = np.random.default_rng(0)
    wp = np.tile(to_wp([0, 0.01, 0.1, 0.5, 1.0]), 6)
    bench = np.repeat(list("abc"), 10)
    y = 0.3 + 0.2 * wp - 0.15 * wp**2 + (bench == "b") * 0.1 + rng.normal(0, 0.02, wp.size)
    ours = earlier_model(wp, y, bench)
    d = pd.DataFrame({"y": y, "w": 2 * wp - 1, "b": bench})
    ref = sm.ols("y ~ w + I(w**2) + C(b)", d).fit()
    assert ours["coef"]["w"] == pytest.approx(ref.params["w"], rel=1e-10)
    assert ours["se"]["w2"] == pytest.approx(ref.bse["I(w ** 2)"], rel=1e-10)
    assert ours["p"]["w2"] == pytest.approx(ref.pvalues["I(w ** 2)"], rel=1e-8)
    assert ours["r2"] == pytest.approx(ref.rsquared, rel=1e-10)


def test_holm_matches_statsmodels():
    mt = pytest.importorskip("statsmodels.stats.multitest")
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.2])
    assert holm(p) == pytest.approx(mt.multipletests(p, method="holm")[1])
