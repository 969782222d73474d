"""The real page in headless Chromium, driven by Playwright, against server.py, on core WebGPU on Chromium's
SwiftShader adapter (only --enable-unsafe-webgpu, see FLAGS).

What is checked (issue 5): the page loads the tiny synthetic model and its 16 greedy ids equal the native driver's
on the same packed model; a second load takes every shard from the browser cache (server request log); a corrupted
cached shard is detected and fetched again; stop works mid-generation; the default SmolLM2 model answers a chat
prompt with the native driver's greedy text; a Q4_K_M-style K-quant packing (q4_k + q6_k kept from a GGUF) gives the
native driver's greedy ids; no request leaves localhost (a route guard counts and aborts them).
A screenshot of the finished chat goes to artifacts/browser-chat.png.

SwiftShader is slow: token counts are small. Service workers are blocked in the test context so that every request
goes through the route guard (the service worker only caches the app shell; the shard cache is the page's own).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Core WebGPU on Chromium's SwiftShader (the project's browser-test setup: only --enable-unsafe-webgpu for WebGPU).
# Its adapter allows 10 storage buffers per shader stage: the driver splits qkv_rope_decode to fit (shaders.qkv_split).
FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu"]
PROMPT_IDS = [128000, 9906, 1917, 374]
TINY_TOKENS = 16
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_TOKENS = 8
SMOL = "smollm2-135m-instruct"
SMOL_PROMPT = [1, 9906, 1917, 314, 2]  # raw ids (no chat template): the trained model's greedy continuation
SMOL_TOKENS = 16
KQ = "tiny-q4km"               # a Q4_K_M-style GGUF (q4_k + q6_k) packed as it is
KQ_PROMPT = [1, 72, 101, 108]
KQ_TOKENS = 12

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} (Debian chromium) is not installed: apt-get install chromium", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy) a packed model into the test's models folder (symlinks out of it would be refused)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copyfile(f, dst / f.name)


@pytest.fixture(scope="module")
def site(tmp_path_factory, llama3_tokenizer_dir, default_model_dir):
    """Built app (pybuild into a temp folder), a models folder (tiny synthetic + SmolLM2), server.py running."""
    sys.path.insert(0, str(REPO))
    from pybuild.cli import build
    from weights_tool.pack import pack
    from weights_tool.synth import synth

    root = tmp_path_factory.mktemp("site")
    out = build(REPO / "web", root / "web")
    models = root / "models"
    synth(root / "tiny-hf", "llama3-tiny", tokenizer_dir=llama3_tokenizer_dir)
    pack(root / "tiny-hf", models / "tiny", quant="q4_0", progress=False)
    # widths multiples of 256 (K-quant super-blocks); layer 1 of 2 gets llama.cpp's Q6_K attn_v /
    # ffn_down beside Q4_K, the untied output Q6_K: every K kernel runs in the page
    from _gguf_make import make_gguf
    make_gguf(root / "q4km.gguf", mix="q4_k_m", tied=False, hidden=256, ffn=512, layers=2,
              heads=4, kv_heads=2, vocab_pad=242)
    pack(root / "q4km.gguf", models / KQ, quant="q4_k", keep_native=True, progress=False)
    link_tree(default_model_dir, models / SMOL)
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--port", str(port), "--models", str(models),
                             "--web", str(out.dist)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"url": url, "models": models, "log": root / "server.log"}
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        ctx = b.new_context(service_workers="block")
        blocked: list[str] = []

        def guard(route):
            host = re.match(r"^[a-z]+://([^/:]+)", route.request.url)
            if route.request.url.startswith(("data:", "blob:")) or (host and host.group(1) in ("127.0.0.1", "localhost")):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        ctx.route("**/*", guard)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield {"page": page, "blocked": blocked, "errors": errors, "browser": b, "guard": guard}
        ctx.close()
        b.close()


def shard_gets(site, model: str) -> int:
    text = Path(site["log"]).read_text()
    return len(re.findall(rf'"GET /models/{re.escape(model)}/shard-\d{{3}}-[0-9a-f]{{12}}\.bin HTTP', text))


def open_and_load(browser, site, model: str, timeout_s: float = 300) -> dict:
    page = browser["page"]
    page.goto(site["url"])
    page.wait_for_function("window.__app && window.__app.ready", timeout=60_000)
    page.select_option("#model", model)
    page.click("#load")
    page.wait_for_function("window.__app.engine || !document.getElementById('error').hidden",
                           timeout=timeout_s * 1000)
    err = page.evaluate("document.getElementById('error').hidden ? null : "
                        "document.getElementById('errortext').textContent")
    assert err is None, f"the page reported: {err}"
    return page.evaluate("window.__app.engine.info")


def native(code: str):
    """Run the native driver in a child process (Playwright's sync API owns this process's event loop)."""
    import json
    r = subprocess.run([sys.executable, "-c", "import json, sys\nfrom driver.native import load\n" + code],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def native_tiny(site):
    return native(f"e = load({str(site['models'] / 'tiny')!r})\n"
                  f"ids = list(e.generate({PROMPT_IDS}, max_tokens={TINY_TOKENS}, temperature=0.0))\n"
                  "print(json.dumps({'ids': ids, 'dispatches': e.dispatches_per_token, "
                  "'layers': e.cfg.num_hidden_layers, 'qkv': e.graph.qkv_heads('q4_0')}))")


@pytest.fixture(scope="module")
def native_tiny_ids(native_tiny):
    return native_tiny["ids"]


def settings(page, **values) -> None:
    page.evaluate("document.getElementById('settings').open = true")
    for k, v in values.items():
        page.fill(f"#{k}", str(v))


def browser_ids(page, n: int, prompt: list[int] = PROMPT_IDS) -> list[int]:
    return page.evaluate(f"window.__app.engine.completeIds({{prompt_ids: {prompt}, max_tokens: {n}, "
                         "temperature: 0}).then((x) => x.ids)")


# ---- tests (in file order: the cache tests reuse the first load) ----

def test_tiny_model_greedy_ids_match_native(browser, site, native_tiny):
    info = open_and_load(browser, site, "tiny")
    assert info["download"]["fromNet"] == 1 and shard_gets(site, "tiny") == 1
    # the SwiftShader core adapter, as the page reports it (header pill and engine.info)
    assert info["adapter"]["architecture"] == "swiftshader", info["adapter"]
    assert info["mode"] == "core (software fallback)", info["mode"]
    assert "swiftshader" in browser["page"].text_content("#adapter") and \
        info["mode"] in browser["page"].text_content("#adapter")
    # SwiftShader allows 10 storage buffers per stage, the fused q4_0 qkv_rope_decode binds 11: the page splits it
    # in two dispatches a layer (q, kv) where the native lavapipe device (32) runs it fused
    assert native_tiny["qkv"] == ["qkv"]
    assert info["dispatches_per_token"] == native_tiny["dispatches"] + native_tiny["layers"]
    ids = browser_ids(browser["page"], TINY_TOKENS)
    assert len(native_tiny["ids"]) == TINY_TOKENS
    assert ids == native_tiny["ids"]


def test_second_load_uses_cache(browser, site, native_tiny_ids):
    before = shard_gets(site, "tiny")
    info = open_and_load(browser, site, "tiny")
    assert shard_gets(site, "tiny") == before, "a shard was downloaded again although it was cached"
    assert info["download"]["fromNet"] == 0 and info["download"]["fromCache"] == 1
    assert browser_ids(browser["page"], 4) == native_tiny_ids[:4]


def test_corrupted_cached_shard_is_refetched(browser, site, native_tiny_ids):
    page = browser["page"]
    n = page.evaluate("""async () => {
        const c = await caches.open('llama3-webgpu-shards-v1');
        const keys = await c.keys();
        for (const k of keys) {
            const buf = new Uint8Array(await (await c.match(k)).arrayBuffer());
            buf[1000] ^= 0xff;                      // flip one byte: same size, wrong sha256
            await c.put(k, new Response(buf));
        }
        return keys.length;
    }""")
    assert n >= 1
    before = shard_gets(site, "tiny")
    info = open_and_load(browser, site, "tiny")
    assert shard_gets(site, "tiny") == before + 1
    assert info["download"]["fromNet"] == 1
    assert browser_ids(browser["page"], 4) == native_tiny_ids[:4]


def test_stop_mid_generation_api(browser):
    """engine.interrupt() stops a long generation between two tokens (finish_reason 'abort')."""
    stats = browser["page"].evaluate("""async () => {
        const e = window.__app.engine;
        let n = 0;
        const r = await e.completeIds({prompt_ids: %s, max_tokens: 200, temperature: 0,
                                       onToken: () => { if (++n === 3) e.interrupt(); }});
        return {...r.stats, n: r.ids.length};
    }""" % PROMPT_IDS)
    assert stats["finish_reason"] == "abort"
    assert 3 <= stats["n"] < 20 and stats["completion_tokens"] == stats["n"]


def wait_ok(page, cond: str, timeout_s: float) -> None:
    """Wait until ``cond`` holds or the page shows an error (then fail with its text)."""
    page.wait_for_function(f"({cond}) || !document.getElementById('error').hidden", timeout=timeout_s * 1000)
    err = page.evaluate("document.getElementById('error').hidden ? null : "
                        "document.getElementById('errortext').textContent")
    assert err is None, f"the page reported: {err}"


def test_stop_button_mid_chat(browser, site):
    page = browser["page"]
    settings(page, max_tokens=200, temperature=0)
    page.fill("#prompt", "Count to one hundred.")
    page.click("#send")
    wait_ok(page, "document.querySelector('.msg.assistant') && "
                  "document.querySelector('.msg.assistant').textContent.length > 0", 120)
    page.click("#stop")
    wait_ok(page, "!window.__app.generating", 120)
    stats = page.evaluate("window.__app.engine.lastStats")
    assert stats["finish_reason"] == "abort"
    assert 1 <= stats["completion_tokens"] < 200
    assert "stopped" in page.text_content("#stats")


def send_and_wait(page, text: str, timeout_s: float = 300) -> dict:
    page.fill("#prompt", text)
    page.evaluate("window.__app.lastFinish = null")
    page.click("#send")
    page.wait_for_function("(window.__app.lastFinish && !window.__app.generating) || "
                           "!document.getElementById('error').hidden", timeout=timeout_s * 1000)
    return page.evaluate("window.__app.engine.lastStats")


def test_multi_turn_chat_reuses_the_cache_and_survives_an_overflow(browser, site):
    """Issue 12 in the page (tiny model, Llama-3 template): turn 2 reads turn 1's whole prompt
    and reply from the KV cache (stats and the stats line say so); a message longer than the
    context is refused in plain words and not kept; the chat then goes on."""
    page = browser["page"]
    if page.evaluate("window.__app.loadedModel") != "tiny":
        open_and_load(browser, site, "tiny")
    page.click("#newchat")
    settings(page, max_tokens=8, temperature=0)
    s1 = send_and_wait(page, "Hello there.")
    assert page.evaluate("document.getElementById('error').hidden")
    s2 = send_and_wait(page, "How are you today?")
    assert page.evaluate("document.getElementById('error').hidden")
    assert s2["cached_tokens"] >= s1["prompt_tokens"] > 0, (s1, s2)
    assert f"{s2['cached_tokens']} of {s2['prompt_tokens']} prompt tokens cached" in \
        page.text_content("#stats")
    assert page.evaluate("window.__app.messages.length") == 4
    send_and_wait(page, "sea " * 5000)
    err = page.evaluate("document.getElementById('error').hidden ? null : "
                        "document.getElementById('errortext').textContent")
    assert err and re.search(r"your message is [\d,]+ tokens; this model holds 4,096 with the "
                             r"reply \(max_tokens 8\)", err), err
    assert page.evaluate("window.__app.messages.length") == 4   # the refused turn is not kept
    s3 = send_and_wait(page, "Hi")
    assert page.evaluate("document.getElementById('error').hidden")
    assert s3["finish_reason"] in ("stop", "length") and s3["cached_tokens"] >= s2["prompt_tokens"]
    assert page.evaluate("window.__app.messages.length") == 6


def test_cancel_during_prefill_in_the_worker(browser):
    """A 3,000-token prompt, interrupted at the first prefill progress message: the worker sees
    the stop between two chunks (it awaits each), so the prompt is not read to its end (the cache
    holds only the chunks done: ``kv_tokens``); the next request reuses them and completes."""
    r = browser["page"].evaluate("""async () => {
        const e = window.__app.engine;
        const ids = Array.from({length: 3000}, (_, i) => 1000 + (i * 7919) % 100000);
        let events = 0;
        const a = await e.completeIds({prompt_ids: ids, max_tokens: 4, temperature: 0,
                                       onPrefill: () => { if (++events === 1) e.interrupt(); }});
        const b = await e.completeIds({prompt_ids: ids.slice(0, 100), max_tokens: 4, temperature: 0});
        return {a: a.stats, na: a.ids.length, b: b.stats, nb: b.ids.length, events};
    }""")
    assert r["a"]["finish_reason"] == "abort" and r["na"] == 0 and r["events"] >= 1, r
    assert 100 <= r["a"]["kv_tokens"] < 3000, r      # prefill stopped part-way, chunks kept
    assert r["b"]["cached_tokens"] == 99 and r["nb"] == 4, r


def test_speculative_setting_same_ids(browser):
    """Prompt-lookup speculation in the worker (off by default; the request option / page setting turns it on):
    a prompt whose last 3 ids occur earlier, so the first round drafts and verifies; the greedy ids equal plain
    decoding's in the page."""
    r = browser["page"].evaluate("""async () => {
        const e = window.__app.engine;
        const base = Array.from({length: 20}, (_, i) => 1000 + 37 * i);
        const ids = base.concat(base, base.slice(0, 5));
        const a = await e.completeIds({prompt_ids: ids, max_tokens: 16, temperature: 0, ignore_eos: true});
        const b = await e.completeIds({prompt_ids: ids, max_tokens: 16, temperature: 0, ignore_eos: true,
                                       speculative: 'lookup', draft_k: 4});
        return {a: a.ids, b: b.ids, spec: b.stats.speculative};
    }""")
    assert len(r["a"]) == 16 and r["b"] == r["a"], r
    assert r["spec"]["verify_passes"] >= 1 and r["spec"]["drafted"] >= 1, r


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
    settings(page, max_tokens=CHAT_TOKENS, temperature=0)
    page.fill("#prompt", CHAT[0]["content"])
    page.evaluate("window.__app.lastFinish = null")
    page.click("#send")
    wait_ok(page, "window.__app.lastFinish && !window.__app.generating", 300)
    reply = page.text_content(".msg.assistant")
    assert reply == native_chat_text
    assert reply.strip(), "empty reply"
    (REPO / "artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO / "artifacts" / "browser-chat.png"), full_page=True)


def test_q4_k_m_greedy_ids_match_native(browser, site):
    """A Q4_K_M-style packing (mixed q4_k / q6_k, kept bit-exact from the GGUF) in the page:
    the same greedy ids as the native driver on the same files."""
    import json
    nat = native(f"e = load({str(site['models'] / KQ)!r})\n"
                 f"print(json.dumps(list(e.generate({KQ_PROMPT}, max_tokens={KQ_TOKENS}, "
                 "temperature=0.0))))")
    kinds = {e.get("dtype") for e in json.loads(
        (site["models"] / KQ / "manifest.json").read_text())["tensors"].values()}
    assert {"q4_k", "q6_k"} <= kinds
    info = open_and_load(browser, site, KQ)
    assert info["layers"] == 2
    ids = browser_ids(browser["page"], KQ_TOKENS, KQ_PROMPT)
    assert len(nat) == KQ_TOKENS and ids == nat


def test_delete_model_clears_its_shards(browser, site):
    page = browser["page"]
    page.select_option("#model", "tiny")
    page.click("#delete")
    page.wait_for_function("document.getElementById('dltext').textContent.startsWith('Deleted')", timeout=60_000)
    assert page.text_content("#dltext").startswith("Deleted 1 cached shard(s) of tiny")
    left = page.evaluate("""async () => {
        const m = await (await fetch('./models/tiny/manifest.json')).json();
        const c = await caches.open('llama3-webgpu-shards-v1');
        return (await Promise.all(m.shards.map(async (s) => !!(await c.match(`./__shards__/${s.sha256}`))))).filter(Boolean).length;
    }""")
    assert left == 0


def test_offline_reload_chats(browser, site, native_tiny_ids):
    """After a first visit (service worker allowed here), the page reloads and generates with the network off."""
    ctx = browser["browser"].new_context()
    ctx.route("**/*", browser["guard"])
    try:
        page = ctx.new_page()
        first = {"page": page}
        info = open_and_load(first, site, "tiny")
        assert info["download"]["fromNet"] == 1
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        page.reload()  # now controlled by the service worker: the model list is cached too
        page.wait_for_function("window.__app && window.__app.ready && navigator.serviceWorker.controller",
                               timeout=60_000)
        before = shard_gets(site, "tiny")
        ctx.set_offline(True)
        info = open_and_load(first, site, "tiny")
        assert info["download"]["fromCache"] == 1 and shard_gets(site, "tiny") == before
        assert browser_ids(page, 4) == native_tiny_ids[:4]
    finally:
        ctx.close()


def test_no_request_left_localhost(browser):
    assert browser["blocked"] == []
    assert browser["errors"] == []
