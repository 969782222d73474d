"""The page and its worker on driver.session's ChatSession (issue 12 in the browser) and a K-quant model (issue 11),
in headless Chromium on SwiftShader; the same site (built app + server) as tests/test_browser.py (tests/_browser.py,
a session-scoped fixture), its own Chromium and page.

What is checked: a second turn reads the first turn's prompt and reply from the KV cache (the stats and the reply's
status line say how many prompt tokens were cached) and Continue extends a reply cut at max tokens from the cache (only
the reply's tokens are read again, not the conversation); a message longer than the context is refused in plain words
and not kept, and the chat goes on; a stop during a long prompt's prefill ends it between two chunks (the chunks read
stay cached); prompt-lookup speculation gives plain decoding's greedy ids, through the API and through the page's
setting (saved, checked, sent only when on); a Q4_K_M-style packing gives the native driver's greedy ids.
"""

from __future__ import annotations

import json
import re

import pytest

from _browser import (CHATS_KEY, ERROR_TEXT, KQ, OVERFLOW, axe_source, axe_violations, browser_ids, native, open_and_load,
                      open_page, refused, send, settings, shot, wait_ok)

pytestmark = pytest.mark.browser

KQ_PROMPT = [1, 72, 101, 108]
KQ_TOKENS = 12


def _tiny(browser, site) -> None:
    if browser["page"].evaluate("window.__app && window.__app.loadedModel") != "tiny":   # (also run alone)
        open_and_load(browser, site, "tiny")


def test_second_turn_cached_and_continue_from_the_cache(browser, site):
    """Turn 2 reports cached prompt tokens (>= turn 1's prompt) in its stats and its status line; Continue on a reply
    cut at max tokens is served by the session from the cache: the conversation is not read again."""
    _tiny(browser, site)
    page = browser["page"]
    page.click("#newchat")
    settings(page, max_tokens=3, temperature=0, repetition_penalty=1)
    send(page, "Hello there.")
    s1 = page.evaluate("window.__app.engine.lastStats")
    reply = send(page, "How are you today?")
    s2 = page.evaluate("window.__app.engine.lastStats")
    assert s1["cached_tokens"] >= 0 and s2["cached_tokens"] >= s1["prompt_tokens"] > 0, (s1, s2)
    assert s2["prefill_tokens"] == s2["prompt_tokens"] - s2["cached_tokens"]
    assert reply["meta"]["cached_tokens"] == s2["cached_tokens"]
    meta = page.evaluate("[...document.querySelectorAll('#log .msg.assistant .meta')].pop().textContent")
    assert f"{s2['prompt_tokens']} prompt tokens ({s2['cached_tokens']} cached)" in meta, meta
    assert reply["meta"]["finish"] == "length" and "Continue" in meta
    page.evaluate("window.__app.lastFinish = null")
    page.locator("#log .msg.assistant .continue").last.click()
    wait_ok(page, "window.__app.lastFinish && !window.__app.generating", 120)
    s3 = page.evaluate("window.__app.engine.lastStats")
    after = page.evaluate("window.__app.chat.messages")
    assert len(after) == 4 and after[3]["content"].startswith(reply["content"]), "Continue made a new message"
    assert page.evaluate("window.__app.lastRequest.continue") is True
    # the continued prompt is turn 2's prompt + the reply so far (re-encoded): turn 2's prompt is all in the cache,
    # and at most the reply's tokens are read
    assert s3["cached_tokens"] >= s2["prompt_tokens"], (s2, s3)
    assert s3["prefill_tokens"] == s3["prompt_tokens"] - s3["cached_tokens"], s3
    assert 0 < s3["prefill_tokens"] <= s3["prompt_tokens"] - s2["prompt_tokens"], (s2, s3)
    assert s3["completion_tokens"] > 0 and s3["finish_reason"] in ("stop", "length")


def test_multi_turn_chat_survives_an_overflow(browser, site):
    """A message longer than the context is refused in plain words and not kept (its words go back into the box);
    the chat then goes on with the cache of the turns before it."""
    _tiny(browser, site)
    page = browser["page"]
    page.click("#newchat")
    settings(page, max_tokens=4, temperature=0)
    send(page, "Hello there.")
    s1 = page.evaluate("window.__app.engine.lastStats")
    long = "sea " * 5000
    err = refused(page, long)
    assert re.fullmatch(OVERFLOW, err), err
    assert len(page.evaluate("window.__app.chat.messages")) == 2    # the refused turn is not kept
    assert page.input_value("#prompt") == long.strip()
    page.evaluate("window.__app.lastFinish = null")   # (send() would stop at the error still shown)
    page.fill("#prompt", "Hi")
    page.click("#send")
    page.wait_for_function("window.__app.lastFinish && !window.__app.generating", timeout=120_000)
    s3 = page.evaluate("window.__app.engine.lastStats")
    assert page.evaluate(ERROR_TEXT) == ""   # the next success clears the error
    assert s3["finish_reason"] in ("stop", "length") and s3["cached_tokens"] >= s1["prompt_tokens"], (s1, s3)
    assert len(page.evaluate("window.__app.chat.messages")) == 4


def test_cancel_during_prefill_in_the_worker(browser, site):
    """A 3,000-token prompt, interrupted at the first prefill progress message: the worker sees the stop between two
    chunks (it awaits each), so the prompt is not read to its end (the cache holds only the chunks done:
    ``kv_tokens``); the next request reuses them and completes."""
    _tiny(browser, site)
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


def test_speculative_option_same_ids(browser, site):
    """Prompt-lookup speculation in the worker (off by default; the request option turns it on): a prompt whose last
    ids occur earlier, so the first round drafts and verifies; the greedy ids equal plain decoding's in the page."""
    _tiny(browser, site)
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


SPEC_PROMPT = "Repeat after me: one two three four, one two three four, one two three four."


def _speculation(page, on: bool) -> None:
    page.evaluate("document.getElementById('settings').open = true")
    page.set_checked("#speculative", on)
    page.evaluate("document.getElementById('settings').open = false")


def test_speculative_setting_in_the_page(browser, site):
    """The Settings checkbox (off by default) sends speculative 'lookup' + draft_k only when on; the greedy reply is
    the same ids and text as with it off, and the status line says how many drafted tokens were accepted; the
    setting survives a reload; a draft_k out of range is one plain sentence under the field and nothing is sent."""
    _tiny(browser, site)
    page = browser["page"]
    assert page.is_checked("#speculative") is False and page.is_disabled("#draft_k")   # off by default
    settings(page, max_tokens=12, temperature=0, repetition_penalty=1)
    page.click("#newchat")
    off = send(page, SPEC_PROMPT)
    ids_off = page.evaluate("window.__app.engine.lastIds")
    opts = page.evaluate("window.__app.lastRequest.options")
    assert "speculative" not in opts and "draft_k" not in opts, opts
    assert "speculative" not in page.evaluate("window.__app.engine.lastStats")
    assert "drafted" not in page.evaluate("[...document.querySelectorAll('#log .msg.assistant .meta')].pop().textContent")

    _speculation(page, True)
    assert page.is_enabled("#draft_k") and page.input_value("#draft_k") == "4"
    settings(page, draft_k=3)
    page.click("#newchat")
    on = send(page, SPEC_PROMPT)
    ids_on = page.evaluate("window.__app.engine.lastIds")
    assert page.evaluate("window.__app.lastRequest.options")["speculative"] == "lookup"
    assert page.evaluate("window.__app.lastRequest.options")["draft_k"] == 3
    assert len(ids_off) > 0 and ids_on == ids_off and on["content"] == off["content"], (ids_off, ids_on)
    spec = page.evaluate("window.__app.engine.lastStats.speculative")
    assert spec["verify_passes"] >= 1 and spec["drafted"] >= 1 and 0 <= spec["accepted"] <= spec["drafted"], spec
    assert (on["meta"]["drafted"], on["meta"]["accepted"]) == (spec["drafted"], spec["accepted"])
    meta = page.evaluate("[...document.querySelectorAll('#log .msg.assistant .meta')].pop().textContent")
    assert f"{spec['accepted']} of {spec['drafted']} drafted tokens accepted" in meta, meta
    # Continue after speculation was turned off keeps the first part's counts on the status line
    assert on["meta"]["finish"] == "length", on["meta"]
    _speculation(page, False)
    page.evaluate("window.__app.lastFinish = null")
    page.locator("#log .msg.assistant .continue").last.click()
    wait_ok(page, "window.__app.lastFinish && !window.__app.generating", 120)
    assert page.evaluate("window.__app.lastRequest.continue") is True
    assert "speculative" not in page.evaluate("window.__app.lastRequest.options")
    meta = page.evaluate("[...document.querySelectorAll('#log .msg.assistant .meta')].pop().textContent")
    assert f"{spec['accepted']} of {spec['drafted']} drafted tokens accepted" in meta, meta
    _speculation(page, True)
    page.evaluate("document.getElementById('settings').open = true")
    shot(page, "page-settings-speculative")
    assert axe_violations(page, axe_source()) == [], "settings open with speculation on"

    # out of range: the field's sentence, the send refused in the page, no request
    before = page.evaluate("window.__app.lastRequest")
    n_msgs = len(page.evaluate("window.__app.chat.messages"))
    settings(page, draft_k=20)
    page.fill("#prompt", "Hi")
    page.click("#send")
    sentence = "Drafted tokens per step must be a whole number from 1 to 15 (got 20)."
    assert page.text_content("#draft_k-err") == sentence
    assert page.get_attribute("#draft_k", "aria-invalid") == "true"
    assert page.evaluate(ERROR_TEXT).startswith(sentence), page.evaluate(ERROR_TEXT)
    assert page.evaluate("window.__app.lastRequest") == before, "a request was sent with a bad draft_k"
    assert len(page.evaluate("window.__app.chat.messages")) == n_msgs
    settings(page, draft_k=5)
    assert page.get_attribute("#draft_k", "aria-invalid") == "false" and page.evaluate(ERROR_TEXT) == ""

    # kept across a reload (localStorage), restored into the form
    assert page.evaluate(f"JSON.parse(localStorage.getItem({CHATS_KEY!r})).settings")["speculative"] is True
    open_page(page, site)
    assert page.is_checked("#speculative") and page.input_value("#draft_k") == "5" and page.is_enabled("#draft_k")
    page.click("#settings summary")
    page.click("#resetsettings")   # back to off for the tests after this one
    assert not page.is_checked("#speculative") and page.input_value("#draft_k") == "4" and page.is_disabled("#draft_k")
    page.keyboard.press("Escape")


def test_q4_k_m_greedy_ids_match_native(browser, site):
    """A Q4_K_M-style packing (mixed q4_k / q6_k, kept bit-exact from the GGUF) in the page: the same greedy ids as
    the native driver on the same files."""
    nat = native(f"e = load({str(site['models'] / KQ)!r})\n"
                 f"print(json.dumps(list(e.generate({KQ_PROMPT}, max_tokens={KQ_TOKENS}, temperature=0.0))))")
    kinds = {e.get("dtype") for e in json.loads((site["models"] / KQ / "manifest.json").read_text())["tensors"].values()}
    assert {"q4_k", "q6_k"} <= kinds
    info = open_and_load(browser, site, KQ)
    assert info["layers"] == 2
    ids = browser_ids(browser["page"], KQ_TOKENS, KQ_PROMPT)
    assert len(nat) == KQ_TOKENS and ids == nat
