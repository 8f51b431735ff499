"""The API in-process (no workers): limits, storage by id, errors in OpenAI's shape, pagination,
hyper-parameter checks, OpenAI's per-message weight, and a schemathesis run that finds no 5xx."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from plw.serve.app import create_app
from plw.serve.auth import create_key
from plw.serve.settings import Settings


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data = tmp_path_factory.mktemp("api")
    app = create_app(Settings(data_dir=data, max_upload_bytes=100_000, run_workers=False))
    key = create_key(app.state.plw.db, "acme")
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        client.data_dir = data
        yield client


LINE = json.dumps({"prompt": "2+2=", "completion": " 4"}) + "\n"


def upload(api, body: bytes, name="train.jsonl"):
    return api.post("/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"})


def test_upload_limit_413_with_and_without_content_length(api):
    r = upload(api, b"x" * 300_000)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"

    def chunks():  # no Content-Length: the limit holds while the body streams in
        boundary = b"--b\r\n"
        yield boundary + b'Content-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
        for _ in range(30):
            yield b"y" * 10_000
        yield b"\r\n--b--\r\n"
    r = api.post("/v1/files", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert not [p for p in (api.data_dir / "files").glob("*") if p.stat().st_size > 100_000]


def test_file_names_never_reach_the_filesystem(api):
    r = upload(api, LINE.encode(), name="../../../../tmp/evil.jsonl")
    assert r.status_code == 200
    f = r.json()
    assert f["filename"] == "evil.jsonl" and f["bytes"] == len(LINE)
    assert (api.data_dir / "files" / f"{f['id']}.jsonl").read_bytes() == LINE.encode()
    assert api.get(f"/v1/files/{f['id']}/content").content == LINE.encode()
    r = upload(api, b"{}", name="x.jsonl")
    assert api.post("/v1/files", files={"file": ("a", b"{}")}, data={"purpose": "batch"}).status_code == 400


def test_errors_in_openai_shape(api):
    r = api.get("/v1/files/file-nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"
    r = api.post("/v1/fine_tuning/jobs", json={"model": "builtin:tiny"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    r = api.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("body, param", [
    ({"hyperparameters": {"prompt_loss_weight": 1.5}}, "hyperparameters.prompt_loss_weight"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"prompt_loss_weight": -0.1}}}},
     "method.supervised.hyperparameters.prompt_loss_weight"),
    ({"prompt_loss_weight": "half"}, "prompt_loss_weight"),
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
    ({"model": "gpt-4o"}, "model"),
    ({"suffix": "a b"}, "suffix"),
])
def test_bad_hyperparameters_answer_400(api, body, param):
    fid = upload(api, LINE.encode() * 10).json()["id"]
    r = api.post("/v1/fine_tuning/jobs", json={"model": "builtin:tiny", "training_file": fid, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].endswith(param)


def test_pagination_after_and_limit(api):
    fid = upload(api, LINE.encode() * 10).json()["id"]
    ids = [api.post("/v1/fine_tuning/jobs", json={"model": "builtin:tiny", "training_file": fid}).json()["id"]
           for _ in range(3)]
    page = api.get("/v1/fine_tuning/jobs", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] and [j["id"] for j in page["data"]] == ids[::-1][:2]
    rest = api.get("/v1/fine_tuning/jobs", params={"limit": 2, "after": page["data"][-1]["id"]}).json()
    assert rest["data"][0]["id"] == ids[0]


def test_openai_message_weight_zero_is_context(tmp_path):
    """An assistant turn with `weight: 0` weighs like the prompt (PLW), not like a completion."""
    from plw.data import encode_record, load_records
    from plw.data.tokenizer import load_tokenizer
    from plw.errors import PLWError

    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there", "weight": 0},
            {"role": "user", "content": "sum 2 2"}, {"role": "assistant", "content": "four"}]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": msgs}) + "\n")
    tok = load_tokenizer("builtin")
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}"
                         "{% endfor %}")
    rec = load_records(path)[0]
    ex = encode_record(rec, tok, template="chat", prompt_loss_weight=0.25)
    unweighted = dict(msgs[1])
    unweighted.pop("weight")
    path.write_text(json.dumps({"messages": [msgs[0], unweighted, *msgs[2:]]}) + "\n")
    both = encode_record(load_records(path)[0], tok, template="chat", prompt_loss_weight=0.25)
    assert sum(ex["completion_mask"]) < sum(both["completion_mask"])
    assert sum(w == 1.0 for w in ex["weights"]) == sum(ex["completion_mask"])
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "x", "weight": 1},
                                             {"role": "assistant", "content": "y"}]}) + "\n")
    with pytest.raises(PLWError, match=r"c.jsonl:1: messages\[0\].weight: weight is allowed on assistant"):
        load_records(path)


def test_schemathesis_finds_no_server_error(api):
    import schemathesis
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    auth = {"Authorization": api.headers["Authorization"]}
    failures = []
    for op in schema.get_all_operations():
        operation = op.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=auth, checks=[not_a_server_error])

        try:
            run()
        except Exception as err:  # collect, so one run reports every failing operation
            failures.append(f"{operation.method.upper()} {operation.path}: {str(err).splitlines()[0]}")
    assert not failures, "\n".join(failures)
