"""Loading records from JSON, JSONL, Hugging Face data sets and the built-in generator."""

from __future__ import annotations

import json
import warnings

import pytest

from plw.data import Record, load_records, read_records
from plw.data.records import SkippedRecordsWarning
from plw.errors import PLWError


def test_alpaca_json_list_lines(tmp_path):
    rows = [{"instruction": "Add.", "input": "1, 2", "output": "3"},
            {"instruction": "Greet.", "output": "Hello!"},
            {"instruction": "Echo.", "input": None, "output": "x", "text": "extra columns are ignored"}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows, indent=4), encoding="utf-8")
    recs = load_records(path)
    assert [r.format for r in recs] == ["alpaca"] * 3
    assert recs[1] == Record(instruction="Greet.", input="", output="Hello!", source=f"{path}:7")
    assert recs[2].input == ""
    # each record's source line is where its object starts
    text = path.read_text().splitlines()
    for r in recs:
        assert text[int(r.source.rsplit(":", 1)[1]) - 1].strip() == "{"


def test_jsonl_formats_and_roundtrip(tmp_path):
    raw = [{"prompt": "2+2=", "completion": "4"}, {"prompt": "", "completion": "free text"}]
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello", "name": "bot"}]}]
    for rows, fmt in ((raw, "raw"), (chat, "chat")):
        path = tmp_path / f"{fmt}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
        recs = load_records(path)
        assert all(r.format == fmt for r in recs)
        assert recs[0].source == f"{path}:1"
        if fmt == "raw":
            assert [r.to_json() for r in recs] == raw
    assert recs[0].messages[2] == {"role": "assistant", "content": "Hello"}  # only role and content kept


def test_utf8_bom_and_unicode(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"instruction": "Traduis « café »", "output": "coffee ☕"},
                                                 ensure_ascii=False).encode("utf-8"))
    (rec,) = load_records(path)
    assert rec.instruction == "Traduis « café »" and rec.output == "coffee ☕"


def test_column_mapping_and_explicit_format(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Why?", "answer": "Because.", "context": "c"}) + "\n")
    (rec,) = load_records(path, columns={"instruction": "question", "output": "answer", "input": "context"})
    assert (rec.instruction, rec.input, rec.output) == ("Why?", "c", "Because.")
    (rec,) = load_records(path, format="raw", columns={"prompt": "question", "completion": "answer"})
    assert rec.format == "raw" and rec.prompt == "Why?"
    with pytest.raises(PLWError) as err:
        load_records(path, format="alpaca")
    assert (err.value.line, err.value.field) == (1, "instruction")


def test_hugging_face_dataset_with_columns(tmp_path):
    """The `datasets.load_dataset` route, on a local parquet file and a local directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"q": ["Add 1 and 2.", "Name a colour."], "a": ["3", "Blue."], "ctx": ["", ""]})
    pq.write_table(table, tmp_path / "train.parquet")
    recs = load_records(tmp_path / "train.parquet", columns={"instruction": "q", "output": "a", "input": "ctx"})
    assert [(r.instruction, r.output) for r in recs] == [("Add 1 and 2.", "3"), ("Name a colour.", "Blue.")]
    assert recs[1].source.endswith("train.parquet[train]:2")
    data_dir = tmp_path / "ds"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    (rec,) = load_records(str(data_dir))
    assert rec.format == "raw" and rec.completion == "c"
    with pytest.raises(PLWError, match="cannot load data set"):
        load_records(str(tmp_path / "nothing-here"))


def test_builtin_sources():
    a = load_records("builtin:short?n=50&seed=3")
    assert len(a) == 50 and a == load_records("builtin:short?seed=3&n=50")
    assert a != load_records("builtin:short?n=50&seed=4")
    assert len(load_records("builtin:mixed")) == 1000
    assert load_records("builtin:long?n=5")[0].format == "alpaca"


def test_skip_invalid_warns_with_counts(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": null}\n[1]\n')
    with pytest.warns(SkippedRecordsWarning, match=r"skipped 2 of 3 invalid records"):
        recs = load_records(path, skip_invalid=True)
    assert len(recs) == 1
    _, report = read_records(path, skip_invalid=True)
    assert dict(report.skipped) == {"output: expected a string, got null": 1, "record: expected a JSON object, got a list": 1}
    with warnings.catch_warnings():  # nothing skipped: no warning
        warnings.simplefilter("error")
        path.write_text('{"instruction": "a", "output": "b"}\n')
        assert len(load_records(path, skip_invalid=True)) == 1
    path.write_text('{"instruction": "a", "output": null}\n')
    with pytest.raises(PLWError, match="no valid records"):
        load_records(path, skip_invalid=True)


def test_demo_file(demo_file):
    recs = load_records(demo_file)
    assert len(recs) == 999 and all(r.format == "alpaca" for r in recs)
    raw = json.loads(demo_file.read_text(encoding="utf-8"))
    assert [r.to_json() for r in recs] == raw
