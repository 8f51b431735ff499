"""Outputs that behave like files, inputs checked before any work, one data-loading path.

Each test is a case from issue 10's "Why": file modes, device nodes, symlinks, output == input,
Dolly-style and save_to_disk data, seed tasks, an empty output, a sweep with a missing model,
`plw eval` checking its suite and data before loading the model, an unreadable GGUF.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from plw.cli import main
from plw.errors import PLWError


def _run(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture
def alpaca(tmp_path):
    path = tmp_path / "alpaca_data.json"
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i} {i}"} for i in range(5)]
    rows[2]["output"] = ""  # the original alpaca_data.json has empty outputs
    path.write_text(json.dumps(rows))
    return path


def test_written_files_respect_the_umask(tmp_path, capsys, alpaca):
    old = os.umask(0o022)
    try:
        rc, _, err = _run(capsys, ["stats", str(alpaca), "--json", str(tmp_path / "s.json")])
    finally:
        os.umask(old)
    assert rc == 0, err
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o644


def test_device_node_is_written_to_not_replaced(capsys, alpaca):
    rc, _, err = _run(capsys, ["stats", str(alpaca), "--json", "/dev/null"])
    assert rc == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_symlinked_output_replaces_its_target_and_stays_a_link(tmp_path, capsys, alpaca):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    rc, _, err = _run(capsys, ["stats", str(alpaca), "--json", str(link)])
    assert rc == 0, err
    assert link.is_symlink() and json.loads(target.read_text())["n"] == 5


def test_directory_output_is_refused_before_any_work(tmp_path, capsys, alpaca):
    (tmp_path / "d.json").mkdir()
    rc, _, err = _run(capsys, ["stats", str(alpaca), "--json", str(tmp_path / "d.json")])
    assert rc == 2 and "is a directory" in err and (tmp_path / "d.json").is_dir()


def test_invert_refuses_its_own_input_as_output(capsys, alpaca):
    before = alpaca.read_bytes()
    rc, _, err = _run(capsys, ["invert", str(alpaca), "-o", str(alpaca)])
    assert rc == 2 and "is also an input" in err and alpaca.read_bytes() == before


def test_stats_counts_empty_outputs(tmp_path, capsys, alpaca):
    rc, out, err = _run(capsys, ["stats", str(alpaca), "--json", str(tmp_path / "s.json")])
    assert rc == 0, err
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["n"] == 5 and st["n_empty_completion"] == 1 and st["fields"]["completion"]["total"] > 0


def test_empty_output_trains_as_eos_alone():
    from plw.data.encode import encode_record
    from plw.data.schema import Record
    from plw.data.tokenizer import load_tokenizer

    tok = load_tokenizer("builtin")
    ex = encode_record(Record(instruction="Say nothing.", output=""), tok, template="alpaca",
                       prompt_loss_weight=0.1, max_length=128)
    assert ex["input_ids"][-1] == tok.eos_token_id and sum(ex["completion_mask"]) == 1
    assert ex["weights"][-1] == 1.0 and set(ex["weights"][:-1]) <= {0.0, 0.1}


def test_save_to_disk_folders_and_seed_tasks_load(tmp_path):
    import datasets

    from plw.data import load_records

    rows = [{"q": f"Q{i}", "a": f"A{i}"} for i in range(4)]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dict"))
    cols = {"instruction": "q", "output": "a"}
    assert len(load_records(tmp_path / "one", columns=cols)) == 4
    assert [r.output for r in load_records(tmp_path / "dict", columns=cols, split="test")] == ["A0"]
    assert len(load_records(tmp_path / "dict", columns=cols, split="train[1:3]")) == 2
    with pytest.raises(PLWError, match="no split 'valid'.*train, test"):
        load_records(tmp_path / "dict", columns=cols, split="valid")
    with pytest.raises(PLWError, match="column 'question' \\(mapped to instruction\\).*q, a"):
        load_records(tmp_path / "one", columns={"instruction": "question", "output": "a"})
    seed = {"id": "seed_task_0", "name": "breakfast_suggestion", "instruction": "Suggest a breakfast.",
            "instances": [{"input": "", "output": "Oatmeal."}, {"input": "vegan", "output": "Tofu."}],
            "is_classification": False}
    (tmp_path / "seed_tasks.jsonl").write_text(json.dumps(seed) + "\n")
    recs = load_records(tmp_path / "seed_tasks.jsonl")
    assert [(r.instruction, r.input, r.output) for r in recs] == [
        ("Suggest a breakfast.", "", "Oatmeal."), ("Suggest a breakfast.", "vegan", "Tofu.")]


def test_sweep_with_a_missing_model_creates_no_store(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nplw: [0, 1]\nmodels: [models/missing.gguf]\ndatasets: ['builtin:short?n=20']\n"
                    f"output_dir: {tmp_path / 'store'}\n")
    rc, _, err = _run(capsys, ["sweep", "run", str(spec), "--no-progress"])
    assert rc == 2 and "models[0]" in err and "missing.gguf" in err
    assert not (tmp_path / "store").exists()


def test_spec_paths_are_relative_to_the_spec_file(tmp_path, monkeypatch):
    from plw.experiment.grid import expand
    from plw.experiment.spec import load_spec

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    spec = tmp_path / "specs" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text("name: s\nplw: [0]\ndatasets: [../data/a.json, 'invert(../data/a.json)']\n")
    monkeypatch.chdir(tmp_path / "data")  # anywhere else
    loaded = load_spec(spec, check_files=True)
    assert loaded.datasets[0].source == str((tmp_path / "data" / "a.json").resolve())
    assert loaded.datasets[1].invert and loaded.datasets[1].source == loaded.datasets[0].source
    monkeypatch.chdir(tmp_path)  # the run IDs do not depend on where the checkout lives
    assert [r.run_id for r in expand(load_spec(spec))] == [r.run_id for r in expand(loaded)]


def test_eval_checks_suite_and_data_dir_before_loading_the_model(tmp_path, capsys, monkeypatch):
    from plw.data.tokenizer import load_tokenizer
    from plw.train import model as model_module
    from plw.train.tiny import tiny_llama

    tok = load_tokenizer("builtin")
    tiny_llama(tok, seed=0, hidden_size=16, num_layers=1, num_heads=2).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(model_module, "load_model", no_loading)
    rc, _, err = _run(capsys, ["eval", str(tmp_path / "m"), "--suite", "no_such_task_xyz"])
    assert rc == 2 and "unknown task" in err
    rc, _, err = _run(capsys, ["eval", str(tmp_path / "m"), "--suite", "piqa", "--data-dir", str(tmp_path / "nope")])
    assert rc == 2 and "nope" in err
    rc, _, err = _run(capsys, ["eval", str(tmp_path / "missing"), "--suite", "piqa"])
    assert rc == 2 and "missing" in err


def test_unsupported_gguf_is_one_line(tmp_path, capsys):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "not-an-architecture")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    rc, _, err = _run(capsys, ["train", "--model", str(path), "-o", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2 and "unsupported GGUF architecture 'not-an-architecture'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
