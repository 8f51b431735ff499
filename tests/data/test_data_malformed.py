"""Malformed input through the CLI: exit code 2, one line `error: FILE:LINE: field: problem`, no output."""

from __future__ import annotations

import json

import pytest

from plw.cli import main

A = '{"instruction": "Add.", "input": "1, 2", "output": "3"}'
CASES = {
    # name: (file name, content, line, field)
    "jsonl-invalid-json": ("d.jsonl", A + '\n{"instruction": "a", "output": }\n', 2, "json"),
    "json-list-invalid-json": ("d.json", "[\n " + A + ',\n {"instruction": "a" "output": "b"}\n]', 3, "json"),
    "json-list-unterminated": ("d.json", "[\n " + A + ",\n", 3, "json"),
    "json-list-extra-data": ("d.json", "[\n " + A + "\n]\n]\n", 4, "json"),
    "json-not-a-list": ("d.json", '\n"hello"\n', 2, "json"),
    "record-not-object": ("d.jsonl", A + '\n["a", "b"]\n', 2, "record"),
    "list-element-not-object": ("d.json", "[\n " + A + ",\n 17\n]", 3, "record"),
    "unrecognised-record": ("d.jsonl", '{"question": "a", "answer": "b"}\n', 1, "record"),
    "mixed-formats": ("d.jsonl", A + '\n{"prompt": "a", "completion": "b"}\n', 2, "record"),
    "missing-output": ("d.jsonl", A + '\n\n{"instruction": "a", "input": ""}\n', 3, "output"),
    "output-not-string": ("d.jsonl", '{"instruction": "a", "output": 42}\n', 1, "output"),
    "missing-instruction": ("d.jsonl", '{"input": "x", "output": "y"}\n', 1, "instruction"),
    "instruction-not-string": ("d.jsonl", '{"instruction": ["a"], "output": "y"}\n', 1, "instruction"),
    "empty-instruction": ("d.jsonl", '{"instruction": "", "output": "y"}\n', 1, "instruction"),
    "input-not-string": ("d.jsonl", '{"instruction": "a", "input": 3, "output": "y"}\n', 1, "input"),
    "non-utf8-jsonl": ("d.jsonl", (A + "\n" + A + '\n{"instruction": "caf\xe9", "output": "b"}\n').encode("latin-1"),
                       3, "encoding"),
    "non-utf8-json": ("d.json", ("[\n " + A + ',\n {"instruction": "caf\xe9", "output": "b"}\n]').encode("latin-1"),
                      3, "encoding"),
    "raw-missing-completion": ("d.jsonl", '{"prompt": "2+2="}\n', 1, "completion"),
    "raw-prompt-not-string": ("d.jsonl", '{"prompt": 4, "completion": "x"}\n', 1, "prompt"),
    "raw-null-completion": ("d.jsonl", '{"prompt": "a", "completion": "x"}\n{"prompt": "a", "completion": null}\n',
                            2, "completion"),
    "chat-messages-not-list": ("d.jsonl", '{"messages": "hi"}\n', 1, "messages"),
    "chat-empty-messages": ("d.jsonl", '{"messages": []}\n', 1, "messages"),
    "chat-message-not-object": ("d.jsonl", '{"messages": ["hi"]}\n', 1, "messages[0]"),
    "chat-missing-role": ("d.jsonl", '{"messages": [{"content": "hi"}]}\n', 1, "messages[0].role"),
    "chat-unknown-role": ("d.jsonl", '{"messages": [{"role": "user", "content": "hi"}, '
                                     '{"role": "bot", "content": "yo"}]}\n', 1, "messages[1].role"),
    "chat-content-not-string": ("d.jsonl", '{"messages": [{"role": "user", "content": null}]}\n', 1,
                                "messages[0].content"),
    "chat-no-assistant": ("d.jsonl", '{"messages": [{"role": "user", "content": "a"}]}\n', 1, "messages"),
    "empty-file": ("d.jsonl", "\n\n", 1, "data"),
    # JSON \\u escapes can spell a lone surrogate: json.loads accepts it, tokenizers and UTF-8 writers do not.
    "lone-surrogate-instruction": ("d.jsonl", A + '\n{"instruction": "a\\ud800", "output": "b"}\n', 2, "instruction"),
    "lone-surrogate-output": ("d.json", '[{"instruction": "a", "output": "b\\udfff"}]', 1, "output"),
    "lone-surrogate-input": ("d.jsonl", '{"instruction": "a", "input": "\\udc00x", "output": "b"}\n', 1, "input"),
    "raw-lone-surrogate-prompt": ("d.jsonl", '{"prompt": "a\\ud800", "completion": "x"}\n', 1, "prompt"),
    "chat-lone-surrogate": ("d.jsonl", '{"messages": [{"role": "user", "content": "\\ud83d"}, '
                                       '{"role": "assistant", "content": "b"}]}\n', 1, "messages[0].content"),
}


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _run(capsys, argv):
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("command", ["stats", "invert"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_record(tmp_path, capsys, case, command):
    name, content, line, field = CASES[case]
    path = _write(tmp_path, name, content)
    out = tmp_path / "out" / "result.json"
    argv = ["stats", str(path), "--json", str(out)] if command == "stats" else ["invert", str(path), "-o", str(out)]
    rc, stdout, err = _run(capsys, argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}:{line}: {field}: "), lines[0]
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("argv, where", [
    (["stats", "{tmp}/missing.jsonl"], "{tmp}/missing.jsonl: no such file"),
    (["stats", "{tmp}/notes.txt"], "{tmp}/notes.txt: unsupported data file"),
    (["stats", "builtin:huge"], "builtin:huge: unknown built-in data set"),
    (["stats", "builtin:short?n=abc"], "builtin:short?n=abc: n: expected an integer"),
    (["stats", "builtin:short?size=3"], "builtin:short?size=3: size: unknown parameter"),
    (["stats", "builtin:short", "--column", "output"], "column: expected FIELD=COLUMN"),
    (["stats", "builtin:short", "--column", "answer=out"], "columns: unknown field 'answer'"),
    (["stats", "builtin:short", "--template", "vicuna"], "template: unknown template"),
    (["stats"], "DATA: give a DATA source or --builtin"),
    (["invert", "builtin:short", "-o", "{tmp}/o.csv"], "{tmp}/o.csv: output: output must end in .json"),
    (["invert", "builtin:short", "-o", "{tmp}/o.json", "--target-ratio", "0"], "target-ratio: must be a positive"),
    (["invert", "{tmp}/chat.jsonl", "-o", "{tmp}/o.json"], "{tmp}/chat.jsonl:1: messages: prompt inversion needs"),
    (["stats", "builtin:short", "--tokenizer", "{tmp}/none.model"], "{tmp}/none.model: no such file"),
])
def test_bad_arguments(tmp_path, capsys, argv, where):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                                                  {"role": "assistant", "content": "b"}]}))
    argv = [a.format(tmp=tmp_path) for a in argv]
    rc, _, err = _run(capsys, argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + where.format(tmp=tmp_path)), err
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.csv").exists()


def test_skip_invalid_reports_counts(tmp_path, capsys):
    good = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} " * 5} for i in range(6)]
    lines = [json.dumps(g) for g in good]
    lines.insert(1, '{"instruction": "a", "output": null}')
    lines.insert(3, '{"instruction": "a", "output": 5}')
    lines.insert(5, '{"instruction": "a", "output": null}')
    lines.insert(6, "{not json")
    path = _write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    out = tmp_path / "inv.jsonl"
    rc, stdout, err = _run(capsys, ["invert", str(path), "-o", str(out), "--skip-invalid"])
    assert rc == 0, err
    assert "skipped 4 of 10 invalid records" in err
    assert "2 × output: expected a string, got null" in err and "1 × output: expected a string, got a number" in err
    assert "1 × json: invalid JSON" in err
    assert len(out.read_text().splitlines()) == 6
    # without --skip-invalid the first bad record stops everything
    rc, _, err = _run(capsys, ["stats", str(path)])
    assert rc == 2 and err.startswith(f"error: {path}:2: output: expected a string, got null")


def _one_error(capsys, argv, where):
    rc, _, err = _run(capsys, argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {where}: "), err
    return lines[0]


def test_unwritable_outputs_fail_before_writing(tmp_path, capsys):
    data = _write(tmp_path, "d.jsonl", A + "\n" + A + "\n")
    o, rep = tmp_path / "out" / "o.jsonl", tmp_path / "out" / "r.json"
    _one_error(capsys, ["invert", str(data), "-o", "/dev/null/o.jsonl"], "/dev/null/o.jsonl")
    # the report cannot be written: the main output must not be written either
    _one_error(capsys, ["invert", str(data), "-o", str(o), "--json", "/dev/null/x.json"], "/dev/null/x.json")
    _one_error(capsys, ["stats", str(data), "--hist", "/dev/null/h"], "/dev/null/h")
    _one_error(capsys, ["stats", str(data), "--json", "/dev/null/s.json"], "/dev/null/s.json")
    (tmp_path / "plain").write_text("x")
    _one_error(capsys, ["stats", str(data), "--json", str(rep), "--hist", str(tmp_path / "plain")],
               tmp_path / "plain")
    _one_error(capsys, ["stats", str(data), "--json", str(tmp_path)], tmp_path)  # a directory
    _one_error(capsys, ["invert", str(data), "-o", str(o), "--json", str(o)], o)  # one path, two outputs
    assert not (tmp_path / "out").exists()


def test_unwritable_directory(tmp_path, capsys, monkeypatch):
    import plw.data.commands as commands

    data = _write(tmp_path, "d.jsonl", A + "\n")
    monkeypatch.setattr(commands.os, "access", lambda *a, **k: False)
    line = _one_error(capsys, ["invert", str(data), "-o", str(tmp_path / "o.json")], tmp_path / "o.json")
    assert "not writable" in line
    assert not (tmp_path / "o.json").exists()


def test_outputs_land_together(tmp_path):
    """If any output fails while writing, none lands and no temporary file is left behind."""
    from plw.data.commands import _write_all
    from plw.errors import PLWError

    (tmp_path / "plain").write_text("x")
    first, bad = tmp_path / "first.jsonl", tmp_path / "plain" / "r.json"
    with pytest.raises(PLWError) as info:
        _write_all([(first, b"{}\n"), (bad, b"{}\n")])
    assert info.value.file == str(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
    _write_all([(first, b"1\n"), (tmp_path / "sub" / "r.json", b"2\n")])
    assert first.read_text() == "1\n" and (tmp_path / "sub" / "r.json").read_text() == "2\n"
