"""The official `openai` client calls models `plw serve` fine-tuned (live server on 127.0.0.1), and a
real browser drives the dashboard. One server and one finished job serve the whole module."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import openai
import pytest

from serve_helpers import Server, create_key, wait_for, write_chat_file

pytestmark = pytest.mark.slow
CHAT = [{"role": "system", "content": "You are a careful calculator."},
        {"role": "user", "content": "What is 12 plus 30? Answer with the number only."}]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A server with two projects, and a job of project acme that succeeded on builtin:tiny."""
    root = tmp_path_factory.mktemp("infer")
    data = root / "data"
    key, other = create_key(data, "acme"), create_key(data, "rival")
    server = Server(data, "--workers", "1").start()
    server.key, server.other_key = key, other
    try:
        c = client(server)
        training = c.files.create(file=open(write_chat_file(root / "train.jsonl"), "rb"), purpose="fine-tune")
        job = c.fine_tuning.jobs.create(training_file=training.id, model="builtin:tiny",
                                        validation_file=training.id, seed=3,
                                        method={"type": "supervised", "supervised": {"hyperparameters": {
                                            "n_epochs": 2, "batch_size": 8, "prompt_loss_weight": 0.1}}})
        job = wait_for(lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j,
                       timeout=150)
        assert job and job.status == "succeeded", job
        server.job = job
        yield server
    finally:
        server.stop()


def client(server, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key or server.key, max_retries=0, timeout=60)


def test_chat_completion_from_the_fine_tuned_model(tuned):
    c = client(tuned)
    r = c.chat.completions.create(model=tuned.job.fine_tuned_model, messages=CHAT, max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.model == tuned.job.fine_tuned_model
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # the fine-tuned model learnt the data: its answer is not the untrained base model's
    base = c.chat.completions.create(model="builtin:tiny", messages=CHAT, max_tokens=8, temperature=0)
    assert base.choices[0].message.content != choice.message.content


def test_stream_reassembles_to_the_same_text(tuned):
    c = client(tuned)
    kw = dict(model=tuned.job.fine_tuned_model, messages=CHAT, max_completion_tokens=12, temperature=0)
    whole = c.chat.completions.create(**kw)
    chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sse_ends_with_done(tuned):
    body = json.dumps({"model": tuned.job.fine_tuned_model, "messages": CHAT, "max_tokens": 3,
                       "stream": True}).encode()
    req = urllib.request.Request(f"{tuned.base_url}/chat/completions", data=body, method="POST", headers={
        "Authorization": f"Bearer {tuned.key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [ln for ln in r.read().decode().split("\n\n") if ln]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_n_and_seed(tuned):
    c = client(tuned)
    kw = dict(model=tuned.job.fine_tuned_model, messages=CHAT, max_tokens=6, temperature=1.5, n=2, seed=7)
    r = c.chat.completions.create(**kw)
    assert [ch.index for ch in r.choices] == [0, 1]
    again = c.chat.completions.create(**kw)
    assert [ch.message.content for ch in again.choices] == [ch.message.content for ch in r.choices]
    assert r.choices[0].message.content != r.choices[1].message.content  # two samples, not one twice
    assert 2 <= r.usage.completion_tokens <= 12  # both choices counted


def test_stop_sequence(tuned):
    c = client(tuned)
    # the random-init base model rambles on (the fine-tuned one answers a sum in a token or two)
    kw = dict(model="builtin:tiny", prompt="What is 1 plus 2?", max_tokens=12, temperature=0)
    free = c.completions.create(**kw).choices[0].text
    assert len(free) >= 6
    stop = free[3:5]
    cut = c.completions.create(stop=[stop], **kw).choices[0]
    assert cut.text == free[:free.find(stop)] and cut.finish_reason == "stop"
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(stop=stop, stream=True, **kw) if ch.choices)
    assert streamed == cut.text


def test_another_projects_model_is_404(tuned):
    rival = client(tuned, tuned.other_key)
    with pytest.raises(openai.NotFoundError) as err:
        rival.chat.completions.create(model=tuned.job.fine_tuned_model, messages=CHAT, max_tokens=2)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        rival.chat.completions.create(model="ft:no-such-model", messages=CHAT, max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        client(tuned, "plw-wrong").chat.completions.create(model="builtin:tiny", messages=CHAT)


def test_bad_request_answers_400_in_openai_shape(tuned):
    body = json.dumps({"model": tuned.job.fine_tuned_model, "messages": CHAT, "temperature": -1}).encode()
    req = urllib.request.Request(f"{tuned.base_url}/chat/completions", data=body, method="POST", headers={
        "Authorization": f"Bearer {tuned.key}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    error = json.loads(err.value.read())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == "temperature"
    c = client(tuned)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="builtin:tiny", messages=CHAT, top_p=0)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="builtin:tiny", messages=[{"role": "user", "content": "x " * 3000}])
    assert err.value.body["code"] == "context_length_exceeded"


def test_dashboard_in_a_browser(tuned):
    """Headless Chromium: sign in with the key, open the finished job, see its loss curve, send a
    playground message and read the model's answer."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver); CI installs them")
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    wait = WebDriverWait(browser, 60)

    def go(action, element_id):
        """Run `action` (a click or a `get`) and wait for the next page to hold `element_id`."""
        old = browser.find_element(By.TAG_NAME, "html")
        action()
        try:
            wait.until(expected_conditions.staleness_of(old))
            return wait.until(expected_conditions.presence_of_element_located((By.ID, element_id)))
        except TimeoutException:
            raise AssertionError(f"no #{element_id} at {browser.current_url}:\n{browser.page_source[:2000]}") from None

    try:
        root = tuned.base_url.removesuffix("/v1")
        browser.get(root + "/")
        browser.find_element(By.NAME, "api_key").send_keys(tuned.key)
        jobs = go(browser.find_element(By.CSS_SELECTOR, "form#signin button").click, "jobs")
        assert tuned.job.id in jobs.text and "succeeded" in jobs.text
        curve = go(browser.find_element(By.LINK_TEXT, tuned.job.id).click, "loss-curve")
        assert curve.tag_name == "svg"
        assert curve.find_elements(By.CSS_SELECTOR, "polyline.completion_nll")
        assert curve.find_elements(By.CSS_SELECTOR, "polyline.prompt_nll")
        assert curve.find_elements(By.CSS_SELECTOR, "polyline.valid_loss")
        assert browser.find_element(By.ID, "plw").text == "0.1"
        assert "Checkpoint" in browser.find_element(By.ID, "events").text
        browser.find_element(By.NAME, "message").send_keys("What is 12 plus 30?")
        answer = go(browser.find_element(By.CSS_SELECTOR, "form#playground button").click, "answer")
        assert "error" not in answer.get_attribute("class")  # the model's answer (may be empty: EOS first)
        assert browser.find_element(By.NAME, "message").text == "What is 12 plus 30?"
        # another project's key does not see the job
        go(lambda: browser.get(root + "/signout"), "signin")
        browser.find_element(By.NAME, "api_key").send_keys(tuned.other_key)
        jobs = go(browser.find_element(By.CSS_SELECTOR, "form#signin button").click, "jobs")
        assert tuned.job.id not in browser.page_source
    finally:
        browser.quit()
