"""Fixtures (registered in tests/conftest.py) and helpers of tests/test_browser*.py: the built app served by server.py, one headless Chromium on
Chromium's SwiftShader WebGPU adapter, one shared page, the native driver as the oracle, and axe-core.

Debian's Chromium with only --enable-unsafe-webgpu for WebGPU (see FLAGS). SwiftShader decodes the 3-layer test
model at about 1 token/s, so the tests ask for few tokens, share one browser context and one page per test file
(the model stays loaded between tests; the site is built once for all the browser test files) and run in file order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"          # screenshots of the main states (ignored by git, kept by CI)
CHROMIUM = "/usr/bin/chromium"
# Core WebGPU on Chromium's SwiftShader (the project's browser-test setup: only --enable-unsafe-webgpu for WebGPU).
# Its adapter allows 10 storage buffers per shader stage: the driver splits qkv_rope_decode to fit (shaders.qkv_split).
FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu"]
LAST_MODEL = "llama3-webgpu:last-model"   # web/store.js
CHATS_KEY = "llama3-webgpu:chats:v1"      # web/store.js
KQ = "tiny-q4km"                          # a Q4_K_M-style GGUF (q4_k + q6_k) packed as it is
CHECK_OPS = ["matmul"]                    # the ops whose check cases the site exports for /?check=1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_tree(src: Path, dst: Path, skip=()) -> None:
    """Hard-link (or copy) a packed model into the test's models folder (symlinks out of it would be refused)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name in skip:
            continue
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copyfile(f, dst / f.name)


@pytest.fixture(scope="session")
def site(tmp_path_factory, llama3_tokenizer_dir, default_model_dir):
    """Built app (pybuild into a temp folder), a models folder, server.py running. Models: the tiny synthetic one,
    a second copy of it (same manifest name), a broken one (its shard missing), SmolLM2, and a Q4_K_M-style K-quant
    packing (KQ)."""
    sys.path.insert(0, str(REPO))
    from pybuild.cli import build
    from weights_tool.pack import pack
    from weights_tool.synth import synth

    root = tmp_path_factory.mktemp("site")
    out = build(REPO / "web", root / "web")
    models = root / "models"
    synth(root / "tiny-hf", "llama3-tiny", tokenizer_dir=llama3_tokenizer_dir)
    # uniform q4_0 (no 8-bit wv / w2 of the mixed-precision default): one fused qkv_rope_decode a layer natively,
    # the split the page makes under SwiftShader's 10 storage buffers is then what test_browser counts
    pack(root / "tiny-hf", models / "tiny", quant="q4_0", uniform=True, progress=False)
    link_tree(models / "tiny", models / "tiny-copy")
    shard = next(p.name for p in (models / "tiny").iterdir() if p.name.startswith("shard-"))
    link_tree(models / "tiny", models / "broken", skip=(shard,))
    link_tree(default_model_dir, models / "smollm2-135m-instruct")
    # widths multiples of 256 (K-quant super-blocks); layer 1 of 2 gets llama.cpp's Q6_K attn_v / ffn_down beside
    # Q4_K, the untied output Q6_K: every K kernel runs in the page
    from _gguf_make import make_gguf
    make_gguf(root / "q4km.gguf", mix="q4_k_m", tied=False, hidden=256, ffn=512, layers=2, heads=4, kv_heads=2,
              vocab_pad=242)
    pack(root / "q4km.gguf", models / KQ, quant="q4_k", keep_native=True, progress=False)
    # the kernel check's cases for /?check=1 (tests/test_browser_check.py): matmul's quick set, seconds to export
    from shaders.case_export import export
    export(root / "check", quick=True, ops=CHECK_OPS, out=lambda *a: None)
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--port", str(port), "--models", str(models),
                             "--web", str(out.dist), "--check-cases", str(root / "check"),
                             "--check-out", str(root / "check.jsonl")],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"url": url, "models": models, "log": root / "server.log", "broken_shard": shard,
           "check_cases": root / "check", "check_out": root / "check.jsonl"}
    proc.terminate()
    proc.wait(10)
    log.close()


def local_only(blocked: list[str]):
    """A route handler that lets localhost through and aborts (and records) anything else."""
    def guard(route):
        host = re.match(r"^[a-z]+://([^/:]+)", route.request.url)
        if route.request.url.startswith(("data:", "blob:")) or (host and host.group(1) in ("127.0.0.1", "localhost")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()
    return guard


@pytest.fixture(scope="module")
def browser(site):
    """One Chromium, one context, one page for the module (module scope: Playwright's sync API runs an event loop
    while it lives, which the other test files' asyncio.run / wgpu event loops must not meet). bypass_csp: Playwright's wait_for_function evaluates
    strings, which the page's Content-Security-Policy forbids (test_csp_blocks_injected_script checks the CSP in a
    context without it). Service workers are blocked so that every request meets the route guard."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        ctx = b.new_context(service_workers="block", bypass_csp=True, viewport={"width": 1280, "height": 720})
        ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=site["url"].rstrip("/"))
        blocked: list[str] = []
        guard = local_only(blocked)
        ctx.route("**/*", guard)
        page = ctx.new_page()
        errors: list[str] = []
        console: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"{os.environ.get('PYTEST_CURRENT_TEST', '')}: {e}\n{e.stack}"))
        page.on("console", lambda m: console.append(m.text))
        yield {"page": page, "blocked": blocked, "errors": errors, "console": console, "browser": b, "ctx": ctx,
               "guard": guard}
        ctx.close()
        b.close()


# ---- page helpers ----

ERROR_TEXT = "document.getElementById('errortext').textContent"


def shot(page, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def wait_ok(page, cond: str, timeout_s: float) -> None:
    """Wait until ``cond`` holds or the page shows an error (then fail with its text)."""
    page.wait_for_function(f"({cond}) || {ERROR_TEXT}", timeout=timeout_s * 1000)
    err = page.evaluate(ERROR_TEXT)
    assert not err, f"the page reported: {err}"


def open_page(page, site, autoload: bool = False) -> None:
    """Navigate to the app and wait until it is ready; without ``autoload`` the last model is forgotten first."""
    if not autoload and page.url.startswith(site["url"]):
        page.evaluate(f"localStorage.removeItem({LAST_MODEL!r})")
    page.goto(site["url"])
    page.wait_for_function("window.__app && window.__app.ready", timeout=60_000)


def show_setup(page) -> None:
    """Open the model card (it collapses to the chip once a model is loaded)."""
    if page.evaluate("document.getElementById('setup').hidden"):
        page.click("#chip")


def load(page, model: str, timeout_s: float = 300) -> dict:
    show_setup(page)
    page.select_option("#model", model)
    page.click("#load")
    page.wait_for_function(f"(window.__app.engine && window.__app.loadedModel === {model!r} && !window.__app.loading)"
                           f" || {ERROR_TEXT}", timeout=timeout_s * 1000)
    err = page.evaluate(ERROR_TEXT)
    assert not err, f"the page reported: {err}"
    return page.evaluate("window.__app.engine.info")


def open_and_load(browser, site, model: str, timeout_s: float = 300) -> dict:
    open_page(browser["page"], site)
    return load(browser["page"], model, timeout_s)


def settings(page, **values) -> None:
    page.evaluate("document.getElementById('settings').open = true")
    for k, v in values.items():
        page.fill(f"#{k}", str(v))
    page.evaluate("document.getElementById('settings').open = false")


def send(page, text: str, timeout_s: float = 120) -> dict:
    """Send ``text`` and wait for the reply to finish; returns the chat's last message (with its meta)."""
    page.evaluate("window.__app.lastFinish = null")
    page.fill("#prompt", text)
    page.click("#send")
    wait_ok(page, "window.__app.lastFinish && !window.__app.generating", timeout_s)
    return page.evaluate("window.__app.chat.messages[window.__app.chat.messages.length - 1]")


OVERFLOW = (r"This conversation is too long for the model \(\d+ tokens; the model was loaded with room for 4096\)\. "
            r"Start a new chat, or shorten your message\.")   # errors.js's sentence for a ContextOverflow


def refused(page, text: str, timeout_s: float = 120) -> str:
    """Send ``text``, which the engine refuses: the page's error sentence (after the request ended)."""
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function(f"!window.__app.generating && {ERROR_TEXT}", timeout=timeout_s * 1000)
    return page.evaluate(ERROR_TEXT)


def first_token(page, timeout_s: float = 120) -> None:
    wait_ok(page, "window.__app.run && window.__app.run.msg.content.length > 0", timeout_s)


def browser_ids(page, n: int, prompt: list[int]) -> list[int]:
    return page.evaluate(f"window.__app.engine.completeIds({{prompt_ids: {prompt}, max_tokens: {n}, "
                         "temperature: 0}).then((x) => x.ids)")


def shard_gets(site, model: str) -> int:
    text = Path(site["log"]).read_text()
    return len(re.findall(rf'"GET /models/{re.escape(model)}/shard-\d{{3}}-[0-9a-f]{{12}}\.bin HTTP', text))


def import_module(name: str) -> str:
    """JS expression: the app's module ``name`` (hashed in web/dist: asset-map.json maps the names)."""
    return (f"(await import('./' + (await (await fetch('./asset-map.json')).json())[{name!r}]))")


def native(code: str):
    """Run the native driver in a child process (Playwright's sync API owns this process's event loop). Its
    ``load`` records the page's decode program (``DecodeOptions()``; native engines default to
    ``decode_options.NATIVE``), so the page and native run the same dispatches in the same order."""
    prelude = ("import json, sys\nfrom driver.decode_options import DecodeOptions\n"
               "from driver.native import load as _load\n"
               "def load(model, **kw):\n    return _load(model, **{'decode': DecodeOptions(), **kw})\n")
    r = subprocess.run([sys.executable, "-c", prelude + code],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- axe-core (pinned npm tarball, fetched by the set-up: pybuild.pins.AXE_CORE) ----

AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_source() -> str:
    sys.path.insert(0, str(REPO))
    from pybuild import pins
    from pybuild.fetch import ensure

    tgz = ensure(pins.AXE_CORE)  # verified by sha256 + npm integrity; downloaded by the set-up, cached
    with tarfile.open(tgz, "r:gz") as t:
        return t.extractfile("package/axe.min.js").read().decode("utf-8")


def axe_violations(page, source: str) -> list[dict]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now: [{id, impact, help, nodes: [html...]}]."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(content=source)
    res = page.evaluate("async (tags) => { const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}});"
                        " return r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,"
                        " nodes: v.nodes.map((n) => n.html.slice(0, 160))})); }", AXE_TAGS)
    return res
