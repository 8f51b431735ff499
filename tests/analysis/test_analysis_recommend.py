"""`plw recommend`: confidence outside the swept range, bad --scores, and the paper's R_g
thresholds (Table 5)."""

from __future__ import annotations

import json

from plw.analysis.recommend import from_paper
from plw.cli import main

def test_recommend_outside_the_swept_range_is_low_confidence(shared, tmp_path, capsys):
    js = tmp_path / "rec.json"
    gam_csv = shared / "reference" / "gam" / "sweep_scores_by_ratio.csv"
    assert main(["recommend", "--ratio", "20", "--from", str(gam_csv), "--scores", "raw",
                 "--json", str(js)]) == 0
    rec = json.loads(js.read_text())
    assert rec["source"] == "your sweep" and rec["confidence"] == "low"
    assert "outside the range your sweep covered" in rec["explanation"]
    assert 0 <= rec["plw"] <= 1


def test_recommend_rejects_unknown_scores(capsys):
    assert main(["recommend", "--ratio", "0.5", "--scores", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--scores" in err and "bogus" in err and "\n" not in err


def test_recommend_ratio_one_is_not_called_short(capsys):
    assert main(["recommend", "--ratio", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "R_g = 1 (long-completion data)" in out
    assert "short-completion" not in out
    assert "recommended PLW: 0.155" in out and "R_g ≤ 1.0" in out


def test_recommend_between_table5_rows_two_and_two_and_a_half():
    rec = from_paper(2.2)
    assert rec["kind"] == "long" and rec["plw"] == 0.239 and not rec["flat"]
    assert "between Table 5's rows at R_g 2 (optimum PLW 0.239) and 2.5" in rec["explanation"]
    assert "no significant effect" not in rec["explanation"]
    assert from_paper(0.5)["kind"] == "short" and "short-completion" in from_paper(0.5)["explanation"]
    assert from_paper(3.0)["flat"]
