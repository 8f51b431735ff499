"""Grid expansion and stable run IDs."""

from __future__ import annotations

import hashlib
import itertools
import json
import textwrap

import pytest

from plw import P_EXPONENT
from plw.errors import PLWError
from plw.experiment.grid import canonical_json, expand
from plw.experiment.spec import load_spec


def _spec(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_spec(path)


BASE = """\
    name: g
    plw: [0, 0.01, 1]
    models: [builtin:tiny, my/model]
    datasets: [builtin:short, "invert(builtin:long, target_ratio=0.042)"]
    regularizers:
      - none
      - {name: ls, plw: [0, 1], train: {regularizers: {label_smoothing: 0.1}}}
    seeds: [1, 2]
    train: {learning_rate: 0.001, num_epochs: 1}
    """


def test_full_factorial_with_regularizer_levels(tmp_path):
    runs = expand(_spec(tmp_path, BASE))
    # models × datasets × (3 PLW for none + 2 PLW for ls) × seeds
    assert len(runs) == 2 * 2 * (3 + 2) * 2
    assert len({r.run_id for r in runs}) == len(runs)
    cells = {(r.model, r.dataset.name, r.regularizer.name, r.plw, r.seed) for r in runs}
    expected = set(itertools.product(["builtin:tiny", "my/model"], ["builtin:short", "invert(builtin:long, target_ratio=0.042)"],
                                     ["none"], [0.0, 0.01, 1.0], [1, 2]))
    expected |= set(itertools.product(["builtin:tiny", "my/model"], ["builtin:short", "invert(builtin:long, target_ratio=0.042)"],
                                      ["ls"], [0.0, 1.0], [1, 2]))
    assert cells == expected
    ls = next(r for r in runs if r.regularizer.name == "ls")
    assert ls.train_overrides == {"learning_rate": 0.001, "num_epochs": 1,
                                  "regularizers": {"label_smoothing": 0.1}}
    cfg = ls.train_config("data.jsonl", "/out")
    assert cfg["prompt_loss_weight"] == ls.plw and cfg["seed"] == ls.seed and cfg["data"] == "data.jsonl"


def test_run_id_is_hash_of_canonical_config(tmp_path):
    run = expand(_spec(tmp_path, BASE))[0]
    digest = hashlib.sha256(canonical_json(run.config).encode()).hexdigest()
    assert run.config_hash == digest and run.run_id == digest[:12]
    # The hashed config is self-describing.
    cfg = json.loads(canonical_json(run.config))
    assert cfg["plw"] == run.plw and cfg["seed"] == run.seed and cfg["model"] == run.model
    assert run.wp == pytest.approx(run.plw ** P_EXPONENT) if run.plw else run.wp == 0.0


def test_run_ids_stable_across_order_spelling_and_location(tmp_path):
    a = expand(_spec(tmp_path, BASE, "a.yaml"))
    reordered = BASE.replace("plw: [0, 0.01, 1]", "plw: [1, 1e-2, 0.0]") \
                    .replace("seeds: [1, 2]", "seeds: [2, 1]") \
                    .replace("learning_rate: 0.001", "learning_rate: 1.0e-3") \
                    .replace("name: g", "name: g\n    output_dir: elsewhere/x")
    b = expand(_spec(tmp_path, reordered, "b.yaml"))
    assert {r.run_id for r in a} == {r.run_id for r in b}
    # ... but any change that changes results gives new IDs.
    c = expand(_spec(tmp_path, BASE.replace("num_epochs: 1", "num_epochs: 2"), "c.yaml"))
    assert not ({r.run_id for r in a} & {r.run_id for r in c})
    d = expand(_spec(tmp_path, BASE.rstrip(" ") + "    eval: {limit: 5}\n", "d.yaml"))
    assert not ({r.run_id for r in a} & {r.run_id for r in d})


def test_duplicate_factor_names_are_rejected(tmp_path):
    spec = _spec(tmp_path, """\
        name: dup
        datasets: [builtin:short]
        regularizers: [none, {name: none2}]
        """)
    # Different names, so different configs: allowed.
    assert len(expand(spec)) == 20
    with pytest.raises(PLWError, match="duplicate name"):
        _spec(tmp_path, "name: d\ndatasets: [builtin:short, builtin:short]\n")


def test_speed_only_eval_knobs_keep_run_ids(tmp_path):
    """eval.batch_size (and verbose/progress, judge concurrency) change no result: same IDs."""
    head = BASE.rstrip() + "\n"
    base = head + "    eval: {suite: builtin, batch_size: 8}\n"
    ids = [r.run_id for r in expand(_spec(tmp_path, base, "a.yaml"))]
    tuned = head + ("    eval: {suite: builtin, batch_size: 64, options: {verbose: true},\n"
                    "           judge: {base_url: 'http://x/v1', model: j, concurrency: 16}}\n")
    judged = head + "    eval: {suite: builtin, judge: {base_url: 'http://x/v1', model: j}}\n"
    assert [r.run_id for r in expand(_spec(tmp_path, base.replace("8}", "32}"), "b.yaml"))] == ids
    assert ([r.run_id for r in expand(_spec(tmp_path, tuned, "c.yaml"))]
            == [r.run_id for r in expand(_spec(tmp_path, judged, "d.yaml"))])
    # the run still evaluates with its own batch size
    assert {r.eval["batch_size"] for r in expand(_spec(tmp_path, tuned, "c.yaml"))} == {64}
    # what changes results changes the IDs: the suite, the PLW, the training overrides, the limit
    for other in (base.replace("suite: builtin", "suite: offline"),
                  base.replace("plw: [0, 0.01, 1]", "plw: [0, 0.02, 1]"),
                  base.replace("learning_rate: 0.001", "learning_rate: 0.002"),
                  base.replace("batch_size: 8", "limit: 8")):
        new = [r.run_id for r in expand(_spec(tmp_path, other, "e.yaml"))]
        assert set(new) != set(ids)
    changed_plw = {r.run_id for r in expand(_spec(tmp_path, base.replace("0.01", "0.02"), "f.yaml"))}
    kept = [r for r in expand(_spec(tmp_path, base, "a.yaml")) if r.plw != 0.01]
    assert {r.run_id for r in kept} <= changed_plw  # other PLW levels keep their IDs


def test_speed_only_train_knobs_keep_run_ids(tmp_path):
    """The micro-batch split, loss engine and logging cadence change no result: same IDs."""
    base = BASE.replace("train: {learning_rate: 0.001, num_epochs: 1}",
                        "train: {learning_rate: 0.001, num_epochs: 1, per_device_batch_size: 16}")
    ids = [r.run_id for r in expand(_spec(tmp_path, base, "a.yaml"))]
    tuned = base.replace("per_device_batch_size: 16",
                         "per_device_batch_size: 4, gradient_checkpointing: true, "
                         "loss_strategy: vocab_blocks, logging_steps: 7")
    runs = expand(_spec(tmp_path, tuned, "b.yaml"))
    assert [r.run_id for r in runs] == ids
    assert {r.train_overrides["per_device_batch_size"] for r in runs} == {4}  # still trained that way
    for changed in (base.replace("num_epochs: 1", "num_epochs: 2"),
                    base.replace("per_device_batch_size: 16", "per_device_batch_size: 16, dtype: float32")):
        assert set(r.run_id for r in expand(_spec(tmp_path, changed, "c.yaml"))).isdisjoint(ids)
