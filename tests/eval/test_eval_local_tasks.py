"""Local benchmark files: parsed exactly, and every malformed input named by file, line, field."""

from __future__ import annotations

import json

import pytest

from plw.errors import PLWError
from plw.eval import local_tasks


def _piqa(root, docs, labels):
    (root / "piqa").mkdir(parents=True, exist_ok=True)
    (root / "piqa" / "valid.jsonl").write_text(
        "".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    (root / "piqa" / "valid-labels.lst").write_text("".join(f"{x}\n" for x in labels))


DOC = {"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat the lid."}
CSV_HEAD = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"


def test_piqa_labels_are_joined(tmp_path):
    _piqa(tmp_path, [DOC, {**DOC, "goal": "Dry a cup"}], [0, 1])
    docs = local_tasks.read_piqa(tmp_path)
    assert [d["label"] for d in docs] == [0, 1] and docs[1]["goal"] == "Dry a cup"


@pytest.mark.parametrize("docs, labels, where, field", [
    ([DOC, "{not json"], [0, 1], "valid.jsonl:2", None),
    ([DOC, {"goal": "x", "sol1": "y"}], [0, 1], "valid.jsonl:2", "sol2"),
    ([DOC, [1, 2]], [0, 1], "valid.jsonl:2", None),
    ([DOC, DOC], [0, 2], "valid-labels.lst:2", "label"),
    ([DOC, DOC], [0], "valid-labels.lst:1", None),
])
def test_piqa_bad_input(tmp_path, docs, labels, where, field):
    _piqa(tmp_path, docs, labels)
    with pytest.raises(PLWError) as err:
        local_tasks.read_piqa(tmp_path)
    assert where in err.value.one_line()
    assert err.value.field == field


def test_missing_files_are_named(tmp_path):
    (tmp_path / "piqa").mkdir()
    with pytest.raises(PLWError, match="no such file") as err:
        local_tasks.read_piqa(tmp_path)
    assert "valid.jsonl" in err.value.one_line()
    with pytest.raises(PLWError, match="not found"):
        local_tasks.read_truthfulqa(tmp_path / "absent")


def test_truthfulqa_csv_and_mc2_docs(tmp_path):
    (tmp_path / "truthfulqa").mkdir()
    (tmp_path / "truthfulqa" / "TruthfulQA.csv").write_text(
        CSV_HEAD + 'Adversarial,Misc,"Is it, really?",No,"No; Not at all",Yes; Maybe so,src\n')
    docs = local_tasks.read_truthfulqa(tmp_path)
    assert docs == [{"question": "Is it, really?", "correct_answers": ["No", "Not at all"],
                     "incorrect_answers": ["Yes", "Maybe so"]}]
    gen = local_tasks.truthfulqa_gen_docs(docs)[0]
    assert gen["correct_answers"] == ["No.", "Not at all.", "I have no comment."]
    assert gen["incorrect_answers"] == ["Yes.", "Maybe so."]


def test_truthfulqa_missing_value_names_line_and_column(tmp_path):
    (tmp_path / "truthfulqa").mkdir()
    (tmp_path / "truthfulqa" / "TruthfulQA.csv").write_text(
        CSV_HEAD + "A,B,Q1?,a,x; y,z,s\n" + "A,B,Q2?,a,,z,s\n")
    with pytest.raises(PLWError) as err:
        local_tasks.read_truthfulqa(tmp_path)
    assert "TruthfulQA.csv:3" in err.value.one_line() and err.value.field == "Correct Answers"


def test_mc2_score_and_truthfulqa_bleu():
    import math

    ll = [math.log(0.2), math.log(0.1), math.log(0.3)]
    assert local_tasks.mc2_score(ll, [1, 0, 1]) == pytest.approx(0.5 / 0.6)
    assert local_tasks.mc2_score([-1000.0, -1001.0], [1, 0]) == pytest.approx(1 / (1 + math.e ** -1))
    s = local_tasks.truthfulqa_bleu("The sky is blue.", ["The sky is blue."], ["The sky is green."])
    assert s["bleu_max"] == pytest.approx(100.0) and s["bleu_acc"] == 1.0
    assert 0 < s["bleu_diff"] < 100
    s = local_tasks.truthfulqa_bleu("The sky is green.", ["The sky is blue."], ["The sky is green."])
    assert s["bleu_acc"] == 0.0 and s["bleu_diff"] < 0
