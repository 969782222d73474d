"""The real page in headless Chromium, driven by Playwright, against server.py, on core WebGPU on Chromium's
SwiftShader adapter (only --enable-unsafe-webgpu, see tests/_browser.py).

The engine in the page (issue 5): the tiny synthetic model's greedy ids equal the native driver's; a second load takes
every shard from the browser cache; a corrupted cached shard is fetched again; stop works mid-generation; SmolLM2's
greedy ids and chat text equal the native driver's; the page reloads and generates offline; no request leaves
localhost. The chat page (issue 13), one test per numbered problem: (1) a request belongs to its chat, (2) errors in
plain words, (3) a state before the first token and the software-adapter warning, (4) replies cut at max tokens with
Continue, and the repetition penalty, (5) Markdown, (6) model list edge cases, (7) persistence and auto-load, (8) the
phone layout, (9) accessibility (axe-core, pinned); plus hostile Markdown through the page's renderer and the CSP.
Screenshots of the main states go to artifacts/page-*.png (and artifacts/browser-chat.png).

Tests run in file order on one shared page: the model loaded by one test is used by the next ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _browser import (CHATS_KEY, CHROMIUM, ERROR_TEXT, LAST_MODEL, OVERFLOW, axe_source, axe_violations,
                      browser_ids, first_token, import_module, load, native, open_and_load, open_page, refused, send,
                      settings, shard_gets, shot, show_setup, wait_ok)
from _page_data import (ALLOWED_ELEMENTS, CORRUPT_SHARDS_JS, COUNT_SPOKEN_JS, HOSTILE, HOSTILE_JS, LAYOUT_JS,
                        LONG_REPLY, MARKDOWN_SAMPLE, MD_STREAM_JS, SAVE_MD_CHAT_JS, SHARDS_LEFT_JS, STOP_API_JS, WATCH_REPLY_JS)

PROMPT_IDS = [128000, 9906, 1917, 374]
TINY_TOKENS = 16
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_TOKENS = 8
SMOL = "smollm2-135m-instruct"
SMOL_PROMPT = [1, 9906, 1917, 314, 2]  # raw ids (no chat template): the trained model's greedy continuation
SMOL_TOKENS = 16

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} (Debian chromium) is not installed: apt-get install chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def native_tiny(site):
    return native(f"e = load({str(site['models'] / 'tiny')!r})\n"
                  f"ids = list(e.generate({PROMPT_IDS}, max_tokens={TINY_TOKENS}, temperature=0.0))\n"
                  "print(json.dumps({'ids': ids, 'dispatches': e.dispatches_per_token, "
                  "'layers': e.cfg.num_hidden_layers, 'qkv': e.graph.qkv_heads('q4_0')}))")


@pytest.fixture(scope="module")
def native_tiny_ids(native_tiny):
    return native_tiny["ids"]


@pytest.fixture(scope="module")
def axe(site):
    return axe_source()


# ---- the engine in the page ----

def test_tiny_model_greedy_ids_match_native(browser, site, native_tiny, axe):
    page = browser["page"]
    open_page(page, site)
    shot(page, "page-start")
    assert axe_violations(page, axe) == [], "the start page"
    info = load(page, "tiny")
    assert info["download"]["fromNet"] == 1 and shard_gets(site, "tiny") == 1
    # the SwiftShader core adapter, as the page reports it (engine.info and the model chip)
    assert info["adapter"]["architecture"] == "swiftshader", info["adapter"]
    assert info["mode"] == "core (software fallback)", info["mode"]
    assert "SwiftShader" in page.text_content("#chip")
    # SwiftShader allows 10 storage buffers per stage, the fused q4_0 qkv_rope_decode binds 11: the page splits it
    # in two dispatches a layer (q, kv) where the native lavapipe device (32) runs it fused
    assert native_tiny["qkv"] == ["qkv"]
    assert info["dispatches_per_token"] == native_tiny["dispatches"] + native_tiny["layers"]
    ids = browser_ids(page, TINY_TOKENS, PROMPT_IDS)
    assert len(native_tiny["ids"]) == TINY_TOKENS
    assert ids == native_tiny["ids"]
    log = page.evaluate("window.__app.progressLog")
    # a first load downloads (with a speed) and cannot know the pipeline total yet
    assert any(t.startswith("Download:") and t.endswith("/s") for t in log), log
    assert any(re.fullmatch(r"Preparing: compiled \d+ shader pipelines \(the total is known after the first load\)", t)
               for t in log), log


def test_second_load_uses_cache(browser, site, native_tiny_ids):
    """A load from the cache says so (no "Download ... MiB/s"), and counts pipelines "N of M"."""
    page = browser["page"]
    before = shard_gets(site, "tiny")
    open_page(page, site)
    show_setup(page)
    page.select_option("#model", "tiny")
    page.wait_for_function("document.getElementById('modelstate').textContent.startsWith("
                           "\"In this browser's cache (1 of 1 shards)\")", timeout=10_000)
    page.click("#load")
    # the progress bars are progress bars to assistive tech, with values
    page.wait_for_function("document.getElementById('dlbar').getAttribute('aria-valuetext')")
    bars = page.evaluate("[...document.querySelectorAll('[role=progressbar], progress')].map((e) => ({tag: e.tagName, "
                         "label: e.labels && e.labels[0] && e.labels[0].textContent, max: e.max}))")
    assert [b["tag"] for b in bars] == ["PROGRESS", "PROGRESS"] and all(b["max"] == 100 for b in bars), bars
    shot(page, "page-loading")
    wait_ok(page, "window.__app.engine && !window.__app.loading", 300)
    info = page.evaluate("window.__app.engine.info")
    assert shard_gets(site, "tiny") == before, "a shard was downloaded again although it was cached"
    assert info["download"]["fromNet"] == 0 and info["download"]["fromCache"] == 1
    log = page.evaluate("window.__app.progressLog")
    dl = [t for t in log if "shard" in t]
    assert dl and all(t.startswith("Loading from this browser's cache") for t in dl), dl
    assert not any("/s" in t for t in log), log
    assert f"Preparing: compiled {info['kernels']} of {info['kernels']} shader pipelines" in log, log
    assert browser_ids(page, 4, PROMPT_IDS) == native_tiny_ids[:4]
    # the bench mode's profile (driver/profile.py) on the page's engine: every dispatch in one row, each row timed;
    # it overwrote the KV cache, and the next generation (which would reuse the prompt) is still the native one
    prof = page.evaluate("window.__app.engine.profile({prompt: 4, ctx: 8})")
    for name in ("prefill", "decode"):
        (tag, n_all, ms_all), *rows = prof[name]
        assert tag == "all" and n_all == sum(r[1] for r in rows) and ms_all > 0, prof
        assert all(r[1] >= 1 and r[2] > 0 for r in rows), prof
    assert prof["decode"][0][1] == info["dispatches_per_token"], (prof, info)
    assert browser_ids(page, 4, PROMPT_IDS) == native_tiny_ids[:4]


def test_corrupted_cached_shard_is_refetched(browser, site, native_tiny_ids):
    page = browser["page"]
    n = page.evaluate(CORRUPT_SHARDS_JS)
    assert n >= 1
    before = shard_gets(site, "tiny")
    info = open_and_load(browser, site, "tiny")
    assert shard_gets(site, "tiny") == before + 1
    assert info["download"]["fromNet"] == 1
    assert browser_ids(browser["page"], 4, PROMPT_IDS) == native_tiny_ids[:4]


def test_stop_mid_generation_api(browser):
    """engine.interrupt() stops a long generation between two tokens (finish_reason 'abort'); a request aborted
    while it waits behind another one ends 'abort' without a token (the same semantics for both)."""
    stats = browser["page"].evaluate(STOP_API_JS % PROMPT_IDS)
    assert stats["finish_reason"] == "abort"
    assert 3 <= stats["n"] < 20 and stats["completion_tokens"] == stats["n"]
    assert stats["queued"] == [{"index": 0, "delta": {}, "finish_reason": "abort"}]


def test_stop_button_mid_chat(browser):
    page = browser["page"]
    settings(page, max_tokens=200, temperature=0)
    page.fill("#prompt", "Count to one hundred.")
    page.click("#send")
    first_token(page)
    page.click("#stop")
    wait_ok(page, "!window.__app.generating", 120)
    stats = page.evaluate("window.__app.engine.lastStats")
    assert stats["finish_reason"] == "abort"
    assert 1 <= stats["completion_tokens"] < 200
    assert page.text_content(".msg.assistant .meta").endswith("stopped")


# ---- the chat page: one test per numbered problem of issue 13 ----

def test_1_new_chat_or_delete_during_reply_drops_it(browser):
    """A request belongs to the chat that started it: New chat (and deleting that chat) aborts it, and nothing of it
    reaches the new chat: no stale reply, no status line, no history."""
    page = browser["page"]
    settings(page, max_tokens=200, temperature=0)
    page.click("#newchat")
    page.fill("#prompt", "Tell me a long story.")
    page.click("#send")
    first_token(page)
    old_id = page.evaluate("window.__app.chat.id")
    page.evaluate("window.__app.engine.lastStats = null")
    page.click("#newchat")
    shown = page.evaluate(f"window.__app.chats.find((c) => c.id === {old_id!r}).messages[1].content")
    # the worker ends the old request at its next token; wait for that, then look at the new chat
    page.wait_for_function("window.__app.engine.lastStats && window.__app.engine.lastStats.finish_reason === 'abort'",
                           timeout=60_000)
    page.wait_for_timeout(300)
    assert page.evaluate("document.querySelectorAll('#log .msg').length") == 0
    assert page.evaluate("window.__app.chat.messages") == []
    old = page.evaluate(f"window.__app.chats.find((c) => c.id === {old_id!r}).messages")
    assert [m["role"] for m in old] == ["user", "assistant"]
    assert old[1]["content"] == shown and old[1]["meta"]["finish"] == "abort"  # kept in its own chat, "stopped"
    # the new chat's first request holds only its own message
    settings(page, max_tokens=2)
    reply = send(page, "Hi")
    assert page.evaluate("window.__app.lastRequest.messages") == [{"role": "user", "content": "Hi"}]
    assert reply["role"] == "assistant" and reply["content"] and reply["meta"]["finish"] == "length"
    assert page.evaluate("document.querySelectorAll('#log .msg').length") == 2
    # deleting the chat whose reply is running: aborted, gone, an empty chat in its place
    settings(page, max_tokens=200)
    page.fill("#prompt", "Another long story, please.")
    page.click("#send")
    first_token(page)
    doomed = page.evaluate("window.__app.chat.id")
    page.click("#chatsmenu summary")
    page.click("#chatlist button[aria-current=true] + .del")
    assert page.evaluate(f"window.__app.chats.some((c) => c.id === {doomed!r})") is False
    assert page.evaluate("window.__app.run") is None and page.evaluate("window.__app.chat.messages") == []
    wait_ok(page, "document.querySelectorAll('#log .msg').length === 0 && !window.__app.generating", 5)
    page.keyboard.press("Escape")


def test_2_errors_in_plain_words(browser, axe):
    """Bad settings are caught in the page; engine errors are one plain sentence (class name on the console only),
    leave no empty bubble, give the words back, and clear on the next success."""
    page = browser["page"]
    page.click("#newchat")
    before = page.evaluate("window.__app.lastRequest")
    settings(page, temperature=-1, max_tokens=2)
    page.fill("#prompt", "Hi")
    page.click("#send")
    err = page.evaluate(ERROR_TEXT)
    assert err.startswith("Temperature must be a number from 0 to 2 (got -1).")
    assert page.get_attribute("#temperature", "aria-invalid") == "true"
    assert page.text_content("#temperature-err") == "Temperature must be a number from 0 to 2 (got -1)."
    assert page.evaluate("window.__app.lastRequest") == before, "a request was sent with a bad setting"
    assert page.evaluate("document.querySelectorAll('#log .msg').length") == 0
    page.evaluate("document.getElementById('settings').open = true")
    shot(page, "page-settings-invalid")
    assert axe_violations(page, axe) == [], "settings open with an invalid value"
    settings(page, temperature=0)
    assert page.get_attribute("#temperature", "aria-invalid") == "false"
    # an engine error: a prompt longer than the model's context (ContextOverflow in Python)
    long = "hello " * 4200
    err = refused(page, long)
    assert re.fullmatch(OVERFLOW, err), err
    assert page.get_attribute("#error", "role") == "alert"
    assert page.evaluate("document.querySelectorAll('#log .msg').length") == 0, "a bubble was left behind"
    assert page.input_value("#prompt") == long.strip(), "the message was not given back"
    assert any(c.startswith("[engine] ContextOverflow: your message is ") for c in browser["console"])
    shot(page, "page-error")
    assert axe_violations(page, axe) == [], "an error shown"
    # the worker's own mapping (no page-side check in between): Python's BadOption
    e = page.evaluate("""async () => {
        const r = window.__app.engine._request({type: 'generate', messages: [{role: 'user', content: 'x'}],
                                                options: {top_p: 0}}, () => {});
        try { await r.done; return null; } catch (e) { return {kind: e.kind, cls: e.cls, message: e.message}; }
    }""")
    assert e == {"kind": "bad-option", "cls": "BadOption",
                 "message": "A setting is not valid: top_p must be in (0, 1], got 0.0. Change it under Settings."}
    # createEngine's API checks settings with the same sentences
    e = page.evaluate("""async () => {
        try { await window.__app.engine.chat.completions.create({messages: [{role: 'user', content: 'x'}],
                                                                 temperature: -1}); return null; }
        catch (e) { return {kind: e.kind, cls: e.cls, message: e.message}; }
    }""")
    assert e == {"kind": "bad-option", "cls": "BadOption",
                 "message": "Temperature must be a number from 0 to 100 (got -1)."}
    for text in [page.evaluate(ERROR_TEXT), e["message"]]:
        assert not re.search(r"driver\.|Error\b|Overflow|BadOption|Traceback", text), text
    # the next success clears the error (shown until then)
    page.evaluate("window.__app.lastFinish = null")
    page.fill("#prompt", "Hi")
    page.click("#send")
    assert page.evaluate(ERROR_TEXT)
    page.wait_for_function("window.__app.lastFinish && !window.__app.generating", timeout=120_000)
    assert page.evaluate(ERROR_TEXT) == ""


def test_3_reading_prompt_state_and_software_warning(browser):
    """Before the first token the reply says "Reading your prompt…" (never an empty bubble); SwiftShader gets a
    warning that it runs below 1 token/s, and the title does not claim a GPU."""
    page = browser["page"]
    assert "below 1 token/s" in page.text_content("#software") and page.is_visible("#software")
    assert "SwiftShader" in page.text_content("#software")
    assert "GPU" not in page.text_content("h1")
    page.evaluate(WATCH_REPLY_JS)
    settings(page, max_tokens=2)
    send(page, "Hello there")
    seen = page.evaluate("window.__observer.disconnect() || window.__seen")
    assert seen and seen[0] == "Reading your prompt…", seen[:3]
    assert "" not in seen, "the reply bubble was empty at some point"
    assert not seen[-1].startswith("Reading")


def test_4_cut_at_max_tokens_continue_and_repetition_penalty(browser, site):
    """A reply cut at max tokens says so and offers Continue, which extends the same reply as the native driver
    continues it; the repetition-penalty setting reaches the sampler (ids equal the native driver's with it)."""
    page = browser["page"]
    page.click("#newchat")
    settings(page, max_tokens=3, temperature=0, repetition_penalty=1.5)
    first = send(page, "Hello")
    ids1 = page.evaluate("window.__app.engine.lastIds")
    assert first["meta"]["finish"] == "length" and first["meta"]["completion_tokens"] == 3
    meta = page.text_content(".msg.assistant .meta")
    assert "cut at max tokens — Continue" in meta and re.search(r"\d+ prompt tokens \(\d+ cached\) · 3 tokens · first token", meta)
    shot(page, "page-reply-cut")
    page.evaluate("window.__app.lastFinish = null")
    page.click(".msg.assistant .continue")
    wait_ok(page, "window.__app.lastFinish && !window.__app.generating", 120)
    after = page.evaluate("window.__app.chat.messages")
    ids2 = page.evaluate("window.__app.engine.lastIds")
    assert len(after) == 2 and after[1]["content"].startswith(first["content"]), "Continue made a new message"
    assert after[1]["meta"]["completion_tokens"] == 6
    assert page.evaluate("window.__app.lastRequest.continue") is True
    got = native(f"e = load({str(site['models'] / 'tiny')!r})\n"
                 f"msgs = [{{'role': 'user', 'content': 'Hello'}}]\n"
                 "ids = e.chat_ids(msgs)\n"
                 "r15 = list(e.generate(ids, max_tokens=3, temperature=0.0, repetition_penalty=1.5))\n"
                 "r10 = list(e.generate(ids, max_tokens=3, temperature=0.0, repetition_penalty=1.0))\n"
                 f"cont = ids + e.tokenizer().encode({first['content']!r}, add_special_tokens=False)\n"
                 "c15 = list(e.generate(cont, max_tokens=3, temperature=0.0, repetition_penalty=1.5))\n"
                 "print(json.dumps({'r15': r15, 'r10': r10, 'c15': c15}))")
    assert got["r15"] != got["r10"], "the penalty changes nothing on this model: the test would prove nothing"
    assert ids1 == got["r15"]
    assert ids2 == got["c15"]
    assert page.evaluate("JSON.parse(localStorage.getItem('%s')).settings.repetition_penalty" % CHATS_KEY) == 1.5
    settings(page, repetition_penalty=1.1)


def test_5_markdown_rendered_incrementally(browser):
    """Assistant text is Markdown: code blocks in a monospace font with a Copy button; streaming (prefix by prefix)
    builds the same DOM as one render and rebuilds only the tail."""
    page = browser["page"]
    r = page.evaluate(MD_STREAM_JS % import_module("markdown.js"), MARKDOWN_SAMPLE)
    assert r["same"], "streamed rendering differs from one render"
    assert r["tags"] == ["H3", "P", "DIV", "UL", "DIV", "P"], r["tags"]
    assert r["code"] == 'def add(a, b):\n    return a + b  # <b>not bold</b>\n\nprint(add(1, 2))'
    assert "mono" in r["font"].lower(), r["font"]
    assert r["lang"] == "python" and r["strong"] == "bold" and r["link"] == "https://example.org/docs"
    assert r["items"] == ["one", "two with code"] and r["th"] == ["a", "b"]
    assert r["maxRebuilt"] >= 4, "the last update rebuilt blocks that did not change"
    assert r["copied"] == r["code"] and r["copyLabel"] == "Copied"


def test_hostile_markdown_runs_nothing(browser, site):
    """Hostile HTML/Markdown through the page's renderer: no script runs, no element outside the allowed set, no
    event-handler attribute, no link other than http(s)/mailto, no image request. The shared context bypasses the
    page's CSP, so this is the renderer alone, without that safety net."""
    page = browser["ctx"].new_page()
    page.route("**/api/models", lambda route: route.fulfill(json={"models": [], "broken": []}))
    try:
        page.goto(site["url"])
        page.wait_for_function("window.__app && window.__app.ready", timeout=60_000)
        r = page.evaluate(HOSTILE_JS % import_module("markdown.js"), [HOSTILE, sorted(ALLOWED_ELEMENTS)])
        assert r["pwned"] is None, f"script ran: {r['pwned']}"
        assert r["problems"] == []
        assert "<img src=x onerror=" in r["text"] and "<script>" in r["text"]  # shown as the characters they are
        assert all(u.startswith(("https://", "http://", "mailto:")) for u in r["links"]) and r["links"]
    finally:
        page.close()
    assert browser["blocked"] == [], "a request left localhost"


def test_csp_blocks_injected_script(browser, site):
    """Defence in depth: the page's Content-Security-Policy refuses inline script and handlers."""
    ctx = browser["browser"].new_context(service_workers="block")
    ctx.route("**/*", browser["guard"])
    try:
        page = ctx.new_page()
        page.route("**/api/models", lambda route: route.fulfill(json={"models": [], "broken": []}))
        page.goto(site["url"])
        got = page.evaluate("""() => new Promise((res) => {
            document.body.insertAdjacentHTML('beforeend', '<img src="data:," onerror="window.__csp = 1">' +
                                             '<img src="x.png" onerror="window.__csp = 2">');
            const s = document.createElement('script');
            s.textContent = 'window.__csp = 3';
            document.body.appendChild(s);
            setTimeout(() => res(window.__csp ?? null), 500);
        })""")
        assert got is None
    finally:
        ctx.close()


def test_6_model_list_edge_cases_and_model_switch(browser, site, axe):
    """A broken model is listed with why (not left out), two copies of one model are told apart, no models means no
    Load; loading another model during a reply aborts it and nothing of it reaches the new model's chat state."""
    page = browser["page"]
    show_setup(page)
    opts = page.evaluate("[...document.querySelectorAll('#model option')].map((o) => ({value: o.value, "
                         "text: o.textContent, disabled: o.disabled}))")
    by = {o["value"]: o for o in opts}
    assert by["broken:broken"]["disabled"] and f"{site['broken_shard']} is missing" in by["broken:broken"]["text"]
    assert by["tiny"]["text"].startswith("tiny (folder tiny) ·") and by["tiny-copy"]["text"].startswith(
        "tiny (folder tiny-copy) ·")
    assert f"broken ({site['broken_shard']} is missing)" in page.text_content("#modelinfo")
    shot(page, "page-model-list")
    # a model switch in the middle of a reply
    page.click("#newchat")
    settings(page, max_tokens=200, temperature=0)
    page.fill("#prompt", "Say something long.")
    page.click("#send")
    first_token(page)
    page.select_option("#model", "tiny-copy")
    page.click("#load")
    frozen = page.evaluate("window.__app.chat.messages")
    assert frozen[1]["meta"]["finish"] == "abort" and frozen[1]["content"]
    wait_ok(page, "window.__app.loadedModel === 'tiny-copy' && !window.__app.loading", 300)
    assert page.evaluate("window.__app.chat.messages") == frozen, "the aborted reply changed after the switch"
    assert page.text_content("#log .msg.assistant .meta").endswith("stopped")
    assert page.evaluate("window.__app.engine.model") == "tiny-copy"
    # a server with no model at all
    other = browser["ctx"].new_page()
    other.route("**/api/models", lambda route: route.fulfill(json={"models": [], "broken": []}))
    try:
        other.goto(site["url"])
        other.wait_for_function("window.__app && window.__app.ready", timeout=60_000)
        assert other.is_disabled("#load") and other.is_disabled("#model")
        assert other.text_content("#modelinfo").startswith("No models on this server yet. Pack one with")
        shot(other, "page-no-models")
        assert axe_violations(other, axe) == [], "no models"
    finally:
        other.close()


def test_7_chats_and_settings_persist_and_last_model_autoloads(browser, site):
    """Chats and settings come back after a reload; the last model, fully cached, loads by itself with a visible
    "from this browser's cache" state and a Cancel that works."""
    page = browser["page"]
    settings(page, temperature=0.35, max_tokens=7)
    page.evaluate("document.getElementById('settings').open = true")
    page.fill("#system", "Be brief.")
    page.evaluate("document.getElementById('settings').open = false")
    # a saved chat holding a Markdown reply, as a finished reply leaves it, made the current one
    page.evaluate(SAVE_MD_CHAT_JS, [CHATS_KEY, LONG_REPLY])
    saved = page.evaluate(f"JSON.parse(localStorage.getItem({CHATS_KEY!r}))")
    last = page.evaluate(f"localStorage.getItem({LAST_MODEL!r})")
    assert last == "tiny-copy"
    open_page(page, site, autoload=True)
    page.wait_for_function("window.__app.loading && !document.getElementById('cancelload').hidden", timeout=30_000)
    assert page.text_content("#dltext") == \
        "Loading tiny (folder tiny-copy) from this browser's cache (it was your last model)…"
    shot(page, "page-autoload")
    page.click("#cancelload")
    page.wait_for_function("!window.__app.loading", timeout=30_000)
    assert page.text_content("#dltext") == "Loading was cancelled."
    assert page.evaluate("window.__app.engine") is None and page.is_enabled("#load")
    # restored: the chat list, the current chat (its reply rendered as Markdown), the settings
    restored = page.evaluate("window.__app.chats.map((c) => ({id: c.id, messages: c.messages}))")
    assert sorted(restored, key=lambda c: c["id"]) == sorted(
        ({"id": c["id"], "messages": c["messages"]} for c in saved["chats"]), key=lambda c: c["id"])
    assert page.evaluate("window.__app.chat.id") == "md"
    assert page.text_content("#log .msg.assistant pre code").startswith("def add(a, b):")
    assert page.text_content("#log .msg.assistant .meta") == \
        "12 prompt tokens · 90 tokens · first token 0.50 s · 2.5 tokens/s · finished"
    assert [page.input_value(f"#{k}") for k in ("temperature", "max_tokens", "system")] == ["0.35", "7", "Be brief."]
    assert page.text_content("#chatcount") == f"({len(saved['chats'])})"
    # once more: this time the auto-load runs to the end, no click
    open_page(page, site, autoload=True)
    wait_ok(page, "window.__app.loadedModel === 'tiny-copy' && !window.__app.loading", 300)
    log = page.evaluate("window.__app.progressLog")
    assert any(t.startswith("Loading from this browser's cache") for t in log) and not any("/s" in t for t in log)
    page.click("#settings summary")
    page.click("#resetsettings")
    assert page.input_value("#system") == "" and page.input_value("#max_tokens") == "256"
    page.keyboard.press("Escape")


def test_8_phone_layout(browser, axe):
    """390x844: the model card is a one-line chip, the message box is visible without scrolling, one scroll
    container, no horizontal scroll (a wide code line scrolls inside its block), the Settings panel on the screen."""
    page = browser["page"]
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.wait_for_timeout(200)
        r = page.evaluate(LAYOUT_JS)
        assert r["innerW"] == 390 and r["innerH"] == 844
        assert 0 <= r["prompt"]["top"] and r["prompt"]["bottom"] <= 844, r["prompt"]
        assert r["send"]["right"] <= 390 and r["send"]["bottom"] <= 844
        assert r["pageScrollW"] <= 390 and r["bodyW"] <= 390, "horizontal scroll"
        assert r["pageScrollH"] <= 844, "the page itself scrolls"
        assert r["scrollers"] == ["scroller"], r["scrollers"]
        assert r["setupHidden"] and r["chip"]["h"] < 40 and r["chipOneLine"] == "nowrap", r
        # an open menu panel stays on the screen (anchored to its button it stuck out past the left edge)
        page.click("#settings > summary")
        box = page.evaluate("(() => { const b = document.querySelector('#settings .panel')"
                            ".getBoundingClientRect(); return {left: b.left, right: b.right}; })()")
        page.click("#settings > summary")
        assert box["left"] >= 0 and box["right"] <= 390, box
        shot(page, "page-phone")
        assert axe_violations(page, axe) == [], "phone layout"
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})


def test_9_accessibility(browser, axe):
    """Labelled message box, messages named You / Assistant, errors in an alert region, tokens not announced one by
    one (the log is no live region; a status region speaks a few times a reply), and axe-core finds no WCAG 2.1 A/AA
    violation on the chat with a Markdown reply."""
    page = browser["page"]
    assert page.get_by_role("textbox", name="Message").count() == 1
    assert page.get_attribute("#prompt", "placeholder") == "Message (Enter sends)"
    assert page.get_by_role("article", name="You").count() >= 1
    assert page.get_by_role("article", name="Assistant").count() >= 1
    assert page.evaluate("document.getElementById('log').closest("
                         "'[aria-live], [role=log], [role=status], [role=alert]')") is None, \
        "the conversation is a live region: every token would be spoken"
    assert page.get_attribute("#error", "role") == "alert" and page.get_attribute("#announce", "role") == "status"
    assert axe_violations(page, axe) == [], "the chat with a Markdown reply"
    page.evaluate("[...document.querySelectorAll('#log .msg.user')].at(-1).scrollIntoView()")
    shot(page, "page-markdown")
    page.evaluate(COUNT_SPOKEN_JS)
    settings(page, max_tokens=6, temperature=0)
    reply = send(page, "Count please")
    assert reply["meta"]["completion_tokens"] == 6
    assert 1 <= page.evaluate("window.__spoken") <= 4


def test_6_delete_asks_first_and_updates_the_card(browser, site):
    """Delete asks before it deletes; afterwards the card says the model is gone (and the loaded one is unloaded)."""
    page = browser["page"]
    show_setup(page)
    page.select_option("#model", "tiny-copy")
    cached = "window.__app.engine ? 1 : 0"
    page.click("#delete")
    assert page.is_visible("#confirmdelete")
    assert page.text_content("#confirmtext").startswith("Delete tiny (folder tiny-copy) (9.1 MiB) from this browser? "
                                                        "It is loaded now: it will be unloaded.")
    shot(page, "page-confirm-delete")
    page.click("#confirmno")
    assert not page.is_visible("#confirmdelete") and page.evaluate(cached) == 1
    assert "Loaded and ready." == page.text_content("#modelstate")
    page.click("#delete")
    page.click("#confirmyes")
    page.wait_for_function("document.getElementById('modelstate').textContent.startsWith('Deleted')", timeout=60_000)
    assert page.text_content("#modelstate") == ("Deleted 1 cached shard(s) of tiny (folder tiny-copy). "
                                                "Not downloaded yet: Load downloads 9.1 MiB once.")
    assert page.evaluate(cached) == 0 and page.is_hidden("#chip") and page.is_disabled("#prompt")
    left = page.evaluate(SHARDS_LEFT_JS)
    assert left == 0


# ---- SmolLM2 (the trained default model) ----

@pytest.fixture(scope="module")
def native_chat_text(site):
    return native(f"e = load({str(site['models'] / SMOL)!r})\n"
                  f"print(json.dumps(''.join(e.chat({CHAT!r}, max_tokens={CHAT_TOKENS}, temperature=0.0))))")


@pytest.fixture(scope="module")
def native_smol_ids(site):
    return native(f"e = load({str(site['models'] / SMOL)!r})\n"
                  f"print(json.dumps(list(e.generate({SMOL_PROMPT}, max_tokens={SMOL_TOKENS}, temperature=0.0))))")


def test_smollm2_greedy_ids_match_native(browser, site, native_smol_ids):
    info = open_and_load(browser, site, SMOL, timeout_s=420)
    assert info["layers"] == 30 and info["download"]["fromNet"] == len(
        [p for p in (site["models"] / SMOL).iterdir() if p.name.startswith("shard-")])
    ids = browser_ids(browser["page"], SMOL_TOKENS, SMOL_PROMPT)
    assert len(native_smol_ids) == SMOL_TOKENS
    assert ids == native_smol_ids


def test_smollm2_chat_matches_native(browser, site, native_chat_text):
    page = browser["page"]
    if page.evaluate("window.__app.loadedModel") != SMOL:
        open_and_load(browser, site, SMOL, timeout_s=420)
    page.click("#newchat")
    settings(page, max_tokens=CHAT_TOKENS, temperature=0, repetition_penalty=1)
    reply = send(page, CHAT[0]["content"], timeout_s=300)
    assert reply["content"] == native_chat_text
    assert reply["content"].strip(), "empty reply"
    assert page.text_content("#log .msg.assistant .body") == reply["content"]
    print(f"SmolLM2 on SwiftShader in the page: {reply['meta']['decode_tokens_per_s']:.2f} tokens/s decode")
    shot(page, "browser-chat", full_page=True)


def test_offline_reload_chats(browser, site, native_tiny_ids):
    """After a first visit (service worker allowed here), the page reloads and generates with the network off."""
    ctx = browser["browser"].new_context(bypass_csp=True)
    ctx.route("**/*", browser["guard"])
    try:
        page = ctx.new_page()
        first = {"page": page}
        info = open_and_load(first, site, "tiny")
        assert info["download"]["fromNet"] == 1
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        page.evaluate(f"localStorage.removeItem({LAST_MODEL!r})")  # no auto-load: this test loads by hand
        page.reload()  # now controlled by the service worker: the model list is cached too
        page.wait_for_function("window.__app && window.__app.ready && navigator.serviceWorker.controller",
                               timeout=60_000)
        before = shard_gets(site, "tiny")
        ctx.set_offline(True)
        info = open_and_load(first, site, "tiny")
        assert info["download"]["fromCache"] == 1 and shard_gets(site, "tiny") == before
        assert browser_ids(page, 4, PROMPT_IDS) == native_tiny_ids[:4]
    finally:
        ctx.close()


def test_no_request_left_localhost(browser):
    assert browser["blocked"] == []
    assert browser["errors"] == []
