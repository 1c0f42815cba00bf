"""shoestring serve: the OpenAI-compatible API (through the official `openai` client when it is
installed), the O(1) state cache (answers never depend on it), bad requests, the API key, clean
shutdown, and the chat page in a real browser (selenium + Debian's chromium, when installed).

The model is trained here in about a second on the tiny chat corpus of conftest.py, so replies
are real sentences ending in [EOS] ("3 plus 4 is 7"), which exercises finish_reason "stop".
"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

import shoestring
from shoestring import serve
from shoestring.cli import main as cli_main

MAX_TOKENS = 24            # the server's clamp in these tests
TINY = ["--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "16",
        "--num-experts", "2", "--seq-length", "32", "--batch-size", "8", "--max-steps", "150",
        "--lr", "0.01", "--epochs", "50", "--no-chat", "--quiet", "--threads", "1"]
SAMPLING = dict(temperature=0.8, top_k=40, top_p=0.95)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from conftest import TINY_CHAT
    d = tmp_path_factory.mktemp("serve")
    corpus = d / "tiny.txt"
    corpus.write_text(TINY_CHAT, encoding="utf-8")
    assert cli_main(["train", "--model-data", str(corpus), "--out-dir", str(d / "run")] + TINY) == 0
    return str(d / "run" / "last.json")


@pytest.fixture(scope="module")
def model(ckpt):
    return shoestring.load(ckpt)


def _start(model, **kw):
    kw.setdefault("max_tokens", MAX_TOKENS)
    srv = serve.make_server(model, port=0, model_id="tiny", **kw)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv


def _stop(srv):
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def server(model):
    srv = _start(model)
    yield srv
    _stop(srv)


def request(srv, method, path, body=None, headers=None, raw=None):
    """(status, parsed JSON or text, response headers) over a fresh connection."""
    host, port = srv.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=30)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    text = r.read().decode("utf-8")
    c.close()
    ctype = r.getheader("Content-Type", "")
    return r.status, (json.loads(text) if ctype.startswith("application/json") else text), r


def chat(srv, messages, **kw):
    st, d, _ = request(srv, "POST", "/v1/chat/completions", dict(messages=messages, **kw))
    assert st == 200, d
    return d


def _user(text):
    return {"role": "user", "content": text}


def _healthy(srv):
    st, d, _ = request(srv, "GET", "/health")
    assert st == 200 and d["status"] == "ok"


# ---- the API through the official client --------------------------------------------------------
@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0)


def test_openai_chat_equals_model_chat(client, model):
    finishes = set()
    for seed, text in [(1, "what is 3 plus 4"), (2, "what is 9 plus 9"), (3, "hello")]:
        want = model.chat(max_response=MAX_TOKENS, seed=seed, **SAMPLING).send(text)
        r = client.chat.completions.create(model="tiny", messages=[_user(text)], seed=seed,
                                           max_tokens=MAX_TOKENS, **_openai(SAMPLING))
        assert r.choices[0].message.content == want
        assert r.choices[0].message.role == "assistant" and r.object == "chat.completion"
        finishes.add(r.choices[0].finish_reason)
        pieces, fin, roles = [], None, []
        for ch in client.chat.completions.create(model="tiny", messages=[_user(text)], seed=seed,
                                                 max_tokens=MAX_TOKENS, stream=True,
                                                 **_openai(SAMPLING)):
            assert ch.object == "chat.completion.chunk"
            d = ch.choices[0].delta
            roles.append(d.role)
            pieces.append(d.content or "")
            fin = ch.choices[0].finish_reason or fin
        assert "".join(pieces) == want and fin == r.choices[0].finish_reason
        assert roles[0] == "assistant"
    assert "stop" in finishes                    # the trained model ends replies with [EOS]


def _openai(s):
    """The sampling settings as the openai client passes them (top_k is an extension)."""
    return dict(temperature=s["temperature"], top_p=s["top_p"], extra_body={"top_k": s["top_k"]})


def test_openai_completions_and_models(client, model):
    prompt = "[USER] what is 2 plus"
    want = model.generate(prompt, max_tokens=12, seed=5, **SAMPLING)
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, seed=5,
                                  **_openai(SAMPLING))
    assert r.choices[0].text == want and r.object == "text_completion"
    assert r.usage.completion_tokens <= 12
    got = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, seed=5, stream=True, **_openai(SAMPLING)))
    assert got == want
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"


def test_openai_streaming_usage_and_errors(client):
    import openai
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[_user("what is 1 plus 1")], seed=3, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[_user("hi")])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[_user("hi")], temperature=5)


# ---- O(1) turns: the cache saves work and never changes an answer -------------------------------
def _conversation(srv, turns, stop_at=None):
    """Run a multi-turn conversation, each turn with its own seed; the replies and usages."""
    msgs, replies, usages = [], [], []
    for i, text in enumerate(turns):
        msgs.append(_user(text))
        kw = dict(seed=100 + i, max_tokens=MAX_TOKENS, **SAMPLING)
        if stop_at == i:
            kw["stop"] = ["is"]                  # cuts the reply: the state must follow the cut
        d = chat(srv, msgs, **kw)
        reply = d["choices"][0]["message"]["content"]
        msgs.append({"role": "assistant", "content": reply})
        replies.append(reply)
        usages.append(d["usage"])
    return msgs, replies, usages


TURNS = ["what is 3 plus 4", "what is 5 plus 5", "what is 1 plus 8", "what is 2 plus 0"]


def test_cache_never_changes_answers(model, server):
    server.engine.cache.clear()
    msgs, cached, usages = _conversation(server, TURNS, stop_at=1)
    assert "is" not in cached[1]
    for u in usages[1:]:
        assert u["prompt_tokens_details"]["cached_tokens"] > 0
    server.engine.cache.clear()
    _, cleared, usages2 = _conversation(server, TURNS, stop_at=1)
    nocache = _start(model, cache_mb=0)
    try:
        _, replayed, usages3 = _conversation(nocache, TURNS, stop_at=1)
        assert nocache.engine.cache.stats()["entries"] == 0
    finally:
        _stop(nocache)
    assert cached == cleared == replayed
    assert [u["prompt_tokens"] for u in usages] == [u["prompt_tokens"] for u in usages3]
    assert all("prompt_tokens_details" not in u for u in usages3)
    # the cached state is, bit for bit, the state a replay of the messages computes
    eng = server.engine
    dec = model.decoder()
    key, n_fed = serve.ROOT_KEY, 0
    for m in msgs:
        text = m["content"].strip()
        ids = eng.message_ids(m["role"], text)
        eng._feed(dec, ids)
        n_fed += len(ids)
        key = serve.chain_key(key, m["role"], text)
        if m["role"] == "assistant":
            eng._close_turn(dec)
    state, n = eng.cache.get(key)
    assert (state == dec.state).all() and n == n_fed
    # the first reply of a cleared cache equals Model.chat with the same seed
    assert cached[0] == model.chat(max_response=MAX_TOKENS, seed=100, **SAMPLING).send(TURNS[0])


def test_a_cached_turn_feeds_only_the_new_message(server):
    server.engine.cache.clear()
    msgs, _, usages = _conversation(server, TURNS[:3])
    new = len(server.engine.message_ids("user", TURNS[2])) + 1       # + [BOT]
    u = usages[2]
    assert u["prompt_tokens"] - u["prompt_tokens_details"]["cached_tokens"] == new
    stats = server.engine.cache.stats()
    assert stats["entries"] == 3 and stats["hits"] >= 2


def test_int8_model_serves_what_its_chat_says(ckpt):
    q = shoestring.load(ckpt, int8=True)         # `shoestring serve --int8`
    srv = _start(q)
    try:
        for seed in (1, 2):
            d = chat(srv, [_user("what is 6 plus 2")], seed=seed, **SAMPLING)
            want = q.chat(max_response=MAX_TOKENS, seed=seed, **SAMPLING).send("what is 6 plus 2")
            assert d["choices"][0]["message"]["content"] == want
    finally:
        _stop(srv)


def test_cache_is_bounded_lru():
    import numpy as np
    c = serve.StateCache(3 * (400 + serve.ENTRY_OVERHEAD))
    for i in range(5):
        c.put(bytes([i]), np.full(100, i, np.float32), i)
    assert c.get(b"\0") is None and c.get(b"\1") is None
    assert c.get(b"\2") is not None                         # touched: now the most recent
    c.put(b"\5", np.zeros(100, np.float32), 5)
    assert c.get(b"\3") is None and c.get(b"\2")[1] == 2
    assert c.stats()["entries"] == 3 and c.stats()["evictions"] == 3
    assert serve.StateCache(10).put(b"x", np.zeros(100, np.float32), 0) is None


def test_concurrent_requests_equal_serial_ones(server):
    jobs = [([_user("what is %d plus %d" % (i, 9 - i))], 40 + i) for i in range(8)]
    serial = [chat(server, m, seed=s, **SAMPLING)["choices"][0]["message"]["content"]
              for m, s in jobs]
    out = [None] * len(jobs)

    def run(i):
        m, s = jobs[i]
        out[i] = chat(server, m, seed=s, **SAMPLING)["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == serial


def test_stop_strings_and_clamp(server, model):
    base = chat(server, [_user("what is 3 plus 4")], seed=1, **SAMPLING)
    text = base["choices"][0]["message"]["content"]
    word = text.split()[1]
    for stream in (False, True):
        st, d, _ = request(server, "POST", "/v1/chat/completions",
                           dict(messages=[_user("what is 3 plus 4")], seed=1, stop=[word, "zz"],
                                stream=stream, **SAMPLING))
        assert st == 200
        got = _sse_text(d) if stream else d["choices"][0]["message"]["content"]
        assert got == text[:text.index(word)]
    d = chat(server, [_user("what is 3 plus 4")], seed=1, max_tokens=10 ** 6, temperature=2)
    assert d["usage"]["completion_tokens"] <= MAX_TOKENS


def _sse_text(body):
    out = []
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        d = json.loads(e[len("data: "):])
        out.append(d["choices"][0]["delta"].get("content", ""))
    return "".join(out)


# ---- bad requests: a JSON error with the right 4xx status, and the server goes on ----------------
BAD = [
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400),
    ("POST", "/v1/chat/completions", b"\xff\xfe", 400),
    ("POST", "/v1/chat/completions", {"messages": "hello"}, 400),
    ("POST", "/v1/chat/completions", {"messages": []}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": 7}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"},
                                                   {"role": "assistant", "content": "y"}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "temperature": "hot"}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "max_tokens": 0}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "max_tokens": True}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "top_p": 0}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "seed": 1.5}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "stream": "yes"}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "stop": [""]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "n": 2}, 400),
    ("POST", "/v1/chat/completions", {"messages": [_user("x")], "model": "gpt-4"}, 404),
    ("POST", "/v1/completions", {"prompt": ""}, 400),
    ("POST", "/v1/completions", {"prompt": 5}, 400),
    ("POST", "/v1/completions", {"prompt": "x", "echo": True}, 400),
    ("POST", "/v1/embeddings", {"input": "x"}, 404),
    ("GET", "/nowhere", None, 404),
    ("GET", "/v1/chat/completions", None, 405),
    ("DELETE", "/v1/models", None, 405),
    ("GET", "/v1/models/gpt-4", None, 404),
]


@pytest.mark.parametrize("method,path,body,status", BAD)
def test_bad_requests_get_json_errors(server, method, path, body, status):
    raw = body if isinstance(body, bytes) else None
    st, d, r = request(server, method, path, None if raw else body, raw=raw)
    assert st == status, d
    assert r.getheader("Content-Type") == "application/json"
    assert isinstance(d["error"]["message"], str) and d["error"]["message"]
    _healthy(server)


def test_oversize_body_and_missing_length(model):
    srv = _start(model, max_body_kb=1)
    try:
        big = {"messages": [_user("x" * 2000)]}
        st, d, _ = request(srv, "POST", "/v1/chat/completions", big)
        assert st == 413 and "at most 1024" in d["error"]["message"]
        host, port = srv.server_address[:2]
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.putrequest("POST", "/v1/chat/completions")
        c.endheaders()
        r = c.getresponse()
        assert r.status == 411 and "Content-Length" in json.loads(r.read())["error"]["message"]
        c.close()
        st, d, _ = request(srv, "GET", "/health", headers={"Host": "evil.example:80"})
        assert st == 403
        _healthy(srv)
    finally:
        _stop(srv)


def test_api_key_on_every_api_route(model):
    srv = _start(model, api_key="s3cret")
    try:
        for method, path, body in [("GET", "/v1/models", None),
                                   ("POST", "/v1/chat/completions", {"messages": [_user("hi")]}),
                                   ("POST", "/v1/completions", {"prompt": "hi"})]:
            for h in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                st, d, r = request(srv, method, path, body, headers=h)
                assert st == 401 and d["error"]["code"] == "invalid_api_key"
                assert r.getheader("WWW-Authenticate") == "Bearer"
            st, d, _ = request(srv, method, path, body, headers={"Authorization": "Bearer s3cret"})
            assert st == 200, d
        assert request(srv, "GET", "/")[0] == 200            # the page asks for the key itself
        _healthy(srv)
        openai = pytest.importorskip("openai")
        ok = openai.OpenAI(base_url=srv.url + "v1", api_key="s3cret", max_retries=0)
        assert ok.models.list().data[0].id == "tiny"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "v1", api_key="nope", max_retries=0).models.list()
    finally:
        _stop(srv)


def test_page_is_self_contained(server):
    st, html, r = request(server, "GET", "/")
    assert st == 200 and r.getheader("Content-Type").startswith("text/html")
    assert "default-src 'none'" in r.getheader("Content-Security-Policy")
    assert "/v1/chat/completions" in html and 'name="viewport"' in html
    for bad in ("http://", "https://", "//cdn", "@import"):
        assert bad not in html                   # nothing fetched from elsewhere


# ---- the command: startup line, Ctrl-C and SIGTERM stop cleanly -----------------------------------
@pytest.mark.parametrize("sig,host", [(signal.SIGTERM, "127.0.0.1"), (signal.SIGINT, "0.0.0.0")])
def test_command_serves_and_stops_cleanly(ckpt, tmp_path, sig, host):
    p = subprocess.Popen([sys.executable, "-m", "shoestring", "serve", ckpt, "--port", "0",
                          "--quiet", "--host", host], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        line = p.stdout.readline()
        assert line.startswith("shoestring serve: http://%s:" % host), line + p.stderr.read()
        port = int(line.split()[2].rstrip("/").rsplit(":", 1)[1])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # exposed on purpose: any Host name is fine; on loopback only loopback names are
        c.request("GET", "/v1/models", headers={"Host": "pi.local:%d" % port})
        r = c.getresponse()
        body = json.loads(r.read())
        if host == "127.0.0.1":
            assert r.status == 403
        else:
            assert body["data"][0]["id"] == "run"
        c.close()
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err
    assert ("warning: listening on 0.0.0.0" in err) == (host == "0.0.0.0")


def test_command_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "shoestring", "serve", str(tmp_path / "missing.json")],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 1 and r.stderr.startswith("shoestring: error:")
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "shoestring", "serve"], capture_output=True, text=True,
                       timeout=60, cwd=str(tmp_path))
    assert r.returncode == 2 and "no checkpoint given" in r.stderr


# ---- the page in a real browser ------------------------------------------------------------------
def _chrome():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                   if shutil.which(b)), None)
    driver = next((d for d in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if d
                   and os.path.exists(d)), None)
    if not binary or not driver:
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which(binary)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=420,720"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_page_in_a_browser(server, model, tmp_path):
    pytest.importorskip("selenium.webdriver")  # skip, not fail, where selenium is absent
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    b = _chrome()
    try:
        b.get(server.url)
        WebDriverWait(b, 20).until(lambda d: d.find_element(By.ID, "model").text == "tiny")
        b.find_element(By.TAG_NAME, "summary").click()
        seed = b.find_element(By.ID, "seed")
        seed.send_keys("7")
        b.find_element(By.ID, "temperature").clear()
        b.find_element(By.ID, "temperature").send_keys("0.8")
        box = b.find_element(By.ID, "input")
        box.send_keys("what is 3 plus 4")
        box.send_keys(Keys.ENTER)
        bot = WebDriverWait(b, 30).until(lambda d: [e for e in d.find_elements(
            By.CSS_SELECTOR, ".msg.assistant") if "pending" not in e.get_attribute("class")])
        want = model.chat(max_response=MAX_TOKENS, seed=7, **SAMPLING).send("what is 3 plus 4")
        assert bot[0].text == want and want
        assert [e.text for e in b.find_elements(By.CSS_SELECTOR, ".msg.user")] == ["what is 3 plus 4"]
        b.save_screenshot(str(tmp_path / "page.png"))
        assert os.path.getsize(tmp_path / "page.png") > 1000
        # a second turn goes through the cache: the page sends the whole conversation
        box.send_keys("what is 1 plus 1", Keys.ENTER)
        WebDriverWait(b, 30).until(lambda d: len([e for e in d.find_elements(
            By.CSS_SELECTOR, ".msg.assistant") if "pending" not in e.get_attribute("class")]) == 2)
        b.find_element(By.ID, "reset").click()
        assert b.find_elements(By.CSS_SELECTOR, ".msg") == []
        assert b.find_element(By.ID, "empty").is_displayed()
    finally:
        b.quit()
