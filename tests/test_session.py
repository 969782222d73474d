"""driver.session (the one request path) on the GPU (lavapipe in CI); speculation: test_speculative.py.

What is checked (issue 12):
- options: defaults from the manifest's ``generation`` section, merged and validated the same way;
  bad messages / roles / options: one plain-words error, the session usable after;
- KV-cache reuse: a request prefills only after the longest common prefix with the cached ids;
  prefill rows are bitwise independent of how the prompt is cut into chunks (while fewer than
  driver.prefill_attention.SPLIT_KEYS positions precede a chunk: these models' contexts), so a
  prompt-only reuse gives exactly a fresh prefill's logits; multi-turn chats (replies' K/V from decode reused),
  an edited last turn, a regenerated turn and a changed first (system) turn give the greedy ids of a
  fresh full prefill, with logits within the existing decode-vs-prefill tolerance, on every golden
  model and on SmolLM2 chats (with greedy speculation on the goldens too);
- context: the oldest whole turns are dropped to fit (never the system prompt), a single turn too
  long for the context is refused in plain words and not kept, and the next request works;
- cancel from another thread between prefill chunks; the chunks already done stay cached.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from driver.loader import ContextOverflow
from driver.sampler import BadOption
from driver.session import ChatSession, check_messages, resolve_options, split_turns

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goldens import golden_names, load_golden, load_smollm2_chat, make_checkpoint  # noqa: E402
from _session_common import GREEDY, _collect, _ids, _toks, first_logits, same_or_near_tie  # noqa: E402


def test_options_merge_and_validate():
    gen = {"temperature": 0.6, "top_p": 0.9, "bos_token_id": 1, "eos_token_ids": [2]}
    o = resolve_options(gen, None, 4096)
    assert (o.temperature, o.top_p, o.top_k, o.max_tokens, o.speculative) == (0.6, 0.9, 0, 256,
                                                                             "off")
    o = resolve_options(gen, {"temperature": 0, "top_p": None, "max_tokens": 64.0, "top_k": 40},
                        4096)
    assert (o.temperature, o.top_p, o.max_tokens, o.top_k) == (0.0, 0.9, 64, 40)
    assert isinstance(o.max_tokens, int)
    bad = [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
           ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 5000}, "max_tokens"),
           ({"max_tokens": "64"}, "integer"), ({"top_k": 1.5}, "integer"),
           ({"speculative": "yes"}, "speculative"), ({"draft_k": 0}, "draft_k"),
           ({"draft_k": 16}, "draft_k"), ({"tempreature": 1}, "unknown option"),
           ({"ignore_eos": 1}, "ignore_eos"), ({"seed": True}, "integer")]
    for given, word in bad:
        with pytest.raises(BadOption, match=word):
            resolve_options(gen, given, 4096)
    with pytest.raises(BadOption, match="options must be an object"):
        resolve_options(gen, [1], 4096)


def test_messages_checked_in_plain_words():
    ok = check_messages([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert ok[-1] == {"role": "user", "content": "u"}
    for msgs, word in [("hi", "non-empty list"), ([], "non-empty list"),
                       ([{"role": "user"}], "'role' and 'content'"),
                       ([{"role": "wizard", "content": "x"}], "unknown role 'wizard'"),
                       ([{"role": "user", "content": 3}], "must be a string"),
                       ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                        "last message")]:
        with pytest.raises(BadOption, match=word):
            check_messages(msgs)


def test_split_turns():
    m = lambda r, c: {"role": r, "content": c}  # noqa: E731
    head, turns = split_turns([m("system", "s"), m("assistant", "hello"), m("user", "a"),
                               m("assistant", "b"), m("user", "c")])
    assert head == [m("system", "s")]
    assert turns == [[m("assistant", "hello")], [m("user", "a"), m("assistant", "b")],
                     [m("user", "c")]]

# ---- GPU ----
pytest.importorskip("wgpu", reason="wgpu-py is not installed")
from driver.native import load  # noqa: E402
from driver.speculative import Oracle, generate_speculative  # noqa: E402
from _session_common import tiny  # noqa: E402,F401  (fixture; backend: conftest)


@pytest.mark.parametrize("q", ["f32", "q4_0"])
def test_prefill_rows_independent_of_chunking(tiny, q):
    """A prompt's last-position logits are bitwise the same whether it was prefilled in one go,
    in chunks of 5 or 3 rows, or after a cached prefix of any length (prompt-only reuse)."""
    eng = tiny[q]
    ids = _ids(45, 1)
    sess, cold = ChatSession(eng), ChatSession(eng, reuse=False)
    full = first_logits(cold, ids)
    try:
        for rows in (5, 3):
            eng.prefill_rows = rows
            assert np.array_equal(first_logits(cold, ids), full), rows
        eng.prefill_rows = 16
        for cut in (1, 17, 30, 44):
            eng.kv_ids = []
            first_logits(sess, ids[:cut])         # the cache now holds ids[:cut]
            assert np.array_equal(first_logits(sess, ids), full), cut
            assert sess.last_stats["cached_tokens"] == cut - (cut == 45)
    finally:
        eng.prefill_rows = eng.graph.chunk


def _check_turns(eng, tol: float, n_new: int = 12, seed: int = 0) -> None:
    """Turns through a reusing session against a fresh full prefill (reuse off): greedy ids
    identical, first-token logits within ``tol`` of max |logit|, cached counts as expected."""
    V = eng.cfg.vocab_size
    sess, cold = ChatSession(eng), ChatSession(eng, reuse=False)
    opts = {"options": {**GREEDY, "max_tokens": n_new}}

    def after(*prompts):                   # the cache as a conversation left it
        eng.kv_ids = []
        return [_toks(sess, {"prompt_ids": p, **opts}) for p in prompts]

    sys_a = _ids(6, seed + 1, V)
    p1 = sys_a + _ids(14, seed + 3, V)
    g1, = after(p1)
    assert len(g1) == n_new and sess.last_stats["cached_tokens"] == 0
    p2 = p1 + g1 + _ids(9, seed + 4, V)
    edited = p1 + g1 + [(p2[len(p1) + n_new] + 1) % V] + _ids(6, seed + 5, V)
    other_sys = [(sys_a[0] + 1) % V] + p2[1:]
    # (history run first, new prompt, cached tokens): the reply's last token has no K/V yet
    cases = [((p1,), p2, len(p1) + n_new - 1),           # turn 2 (turn 1's reply K/V reused)
             ((p1, p2), edited, len(p1) + n_new),       # turn 2 edited
             ((p1, p2), p2, len(p2) - 1),               # turn 2 regenerated
             ((p1, p2), other_sys, 0)]                  # the system turn changed
    for i, (history, prompt, cached) in enumerate(cases):
        want = _toks(cold, {"prompt_ids": prompt, **opts})
        after(*history)
        got = _toks(sess, {"prompt_ids": prompt, **opts})
        assert sess.last_stats["cached_tokens"] == cached, (i, sess.last_stats)
        assert got == want, i
        ref = first_logits(cold, prompt)
        after(*history)
        lg = first_logits(sess, prompt)
        assert np.abs(lg - ref).max() <= tol * np.abs(ref).max(), i


@pytest.mark.parametrize("q,tol", [("f32", 1e-4), ("q4_0", 5e-3)])
def test_multi_turn_reuse_equals_fresh_prefill_tiny(tiny, q, tol):
    _check_turns(tiny[q], tol)


@pytest.fixture(scope="module")
def golden_engines(tmp_path_factory, backend):
    from weights_tool.pack import pack
    tmp = tmp_path_factory.mktemp("goldens")
    cache = {}

    def get(name):
        if name not in cache:
            make_checkpoint(name, tmp)
            pack(tmp / name, tmp / f"{name}-f32", quant="f32", progress=False)
            cache[name] = load(tmp / f"{name}-f32", backend=backend, max_context=160,
                                      kv="f32", chunk=16)
        return cache[name]
    return get


@pytest.mark.parametrize("name", golden_names())
def test_goldens_turns_and_speculative(golden_engines, name):
    """Every golden model (f32, the transformers-checked ones): multi-turn reuse, an edited turn,
    a regenerated turn and a system change give a fresh prefill's greedy ids (logits within the
    goldens' 1e-3); greedy speculation (lookup, forced, rejected) gives plain decoding's ids."""
    eng = golden_engines(name)
    _check_turns(eng, 1e-3, n_new=8, seed=7)
    gold = load_golden(name)
    ids = gold["input_ids"].tolist()
    assert list(eng.generate(ids[:8], 32, stop_ids=())) == gold["greedy_ids"].tolist()
    prompt = ids[:40] + ids[10:30]                     # repeats: prompt lookup finds matches
    plain = list(eng.generate(prompt, 48, stop_ids=()))
    for drafter, k in [(None, 3), (Oracle(len(prompt), plain, 512), 7),
                       (Oracle(len(prompt), plain, 512, wrong=True), 3)]:
        got = eng._run(_collect(generate_speculative(eng, prompt, 48, k, "lookup",
                                                     drafter=drafter, stop_ids=())))
        assert got == plain, (drafter, k)
        sp = eng.last_stats["speculative"]
        assert sp["verify_passes"] > 0


def test_cancel_from_another_thread_during_prefill(tiny):
    """A cancel issued from another thread while a long prompt is prefilled (6 chunks of 16):
    the request ends between chunks with finish_reason 'abort' and no token; the chunks done
    stay cached, and the next request reuses them and gives a fresh prefill's tokens."""
    eng = tiny["q4_0"]
    prompt = _ids(100, 8)
    want = list(eng.generate(prompt, 6, stop_ids=()))
    sess = ChatSession(eng)
    eng.kv_ids = []
    chunk_done, cancelled = threading.Event(), threading.Event()
    pace = eng._pace

    def paced(rows, dt):               # runs in the generating thread after each awaited chunk
        pace(rows, dt)
        chunk_done.set()
        cancelled.wait(10)             # the other thread's cancel lands before the next check

    def canceller():
        chunk_done.wait(10)
        sess.cancel()
        cancelled.set()

    eng._pace = paced
    th = threading.Thread(target=canceller)
    th.start()
    try:
        got = _toks(sess, {"prompt_ids": prompt, "options": {**GREEDY, "max_tokens": 6}})
    finally:
        eng._pace = pace
        th.join()
    st = sess.last_stats
    assert got == [] and st["finish_reason"] == "abort" and st["completion_tokens"] == 0
    done = len(eng.kv_ids)
    assert 16 <= done < 100 and done % 16 == 0 and eng.kv_ids == prompt[:done]
    got = _toks(sess, {"prompt_ids": prompt, "options": {**GREEDY, "max_tokens": 6}})
    assert got == want and sess.last_stats["cached_tokens"] == done


def test_prefill_pacing_shrinks_slow_chunks(tiny, monkeypatch):
    """A chunk slower than PREFILL_SLOW_S shrinks the next ones toward PREFILL_TARGET_S; quick
    ones grow back to the graph's chunk; the output does not change."""
    import driver.engine as de
    eng = tiny["f32"]
    eng._pace(16, 2.0)                 # 16 rows in 2 s: 2 rows at 0.25 s -> the 16-row floor
    assert eng.prefill_rows == 16
    monkeypatch.setattr(de, "PREFILL_MIN_ROWS", 4)
    eng._pace(16, 1.0)
    assert eng.prefill_rows == 4
    eng._pace(4, 0.001)
    assert eng.prefill_rows == 8
    prompt = _ids(50, 9)
    want = list(ChatSession(eng, reuse=False).stream({"prompt_ids": prompt,
                                                      "options": {**GREEDY, "max_tokens": 5}}))
    eng.prefill_rows = 16
    assert list(ChatSession(eng, reuse=False).stream(
        {"prompt_ids": prompt, "options": {**GREEDY, "max_tokens": 5}})) == want


def test_decode_step_time_split(tiny):
    """stats' decode_ms_per_step: submit + wait + rest add up to decode's wall time per step,
    each part non-negative; a slow consumer shows up in ``rest``, not in the GPU's parts."""
    import time as _t
    eng = tiny["f32"]
    sess = ChatSession(eng, reuse=False)
    req = {"prompt_ids": _ids(20, 3), "options": {**GREEDY, "max_tokens": 6, "ignore_eos": True}}
    for _ in sess.stream(req):
        _t.sleep(0.02)   # 20 ms of caller work per token
    st = sess.last_stats
    split = st["decode_ms_per_step"]
    assert set(split) == {"submit", "wait", "rest"} and min(split.values()) >= 0, split
    per_step = 1e3 / st["decode_tokens_per_s"]
    assert abs(sum(split.values()) - per_step) < 1e-3 * per_step + 1e-3, (split, per_step)
    assert split["rest"] >= 19.0, split


# ---- real chat templates: the llama3-tiny preset with the Llama-3 tokenizer; SmolLM2 ----


@pytest.fixture(scope="module")
def llama_tiny(tmp_path_factory, llama3_tokenizer_dir, backend):
    from weights_tool.pack import pack
    from weights_tool.synth import synth
    tmp = tmp_path_factory.mktemp("llama-tiny")
    synth(tmp / "hf", "llama3-tiny", tokenizer_dir=llama3_tokenizer_dir)
    pack(tmp / "hf", tmp / "m", quant="q4_0", progress=False)
    return load(tmp / "m", backend=backend, max_context=192, chunk=64)


def _msg(role, text):
    return {"role": role, "content": text}


def test_context_fit_drops_oldest_turns_and_refuses_what_cannot_fit(llama_tiny):
    eng = llama_tiny
    sess = ChatSession(eng)
    opts = {**GREEDY, "max_tokens": 24}
    system = _msg("system", "You answer briefly.")
    for i in range(8):   # a conversation that outgrows the 192-token context
        sess.say(f"Tell me fact number {i} about the sea and its many fish.", system="You "
                 "answer briefly.", **opts)
        st = sess.last_stats
        assert st["prompt_tokens"] + 24 <= 192 and st["finish_reason"] == "length"
    assert st["truncated_turns"] > 0                 # older turns left out, the reply came
    assert sess.history[0] == system                 # the session keeps the whole history
    ids = sess.last_prompt_ids
    head = eng.chat_ids([system, _msg("user", "x")])
    assert ids[:len(head) - 8] == head[:len(head) - 8]   # the system prompt is still first
    before = list(sess.history)
    # the same cut next turn: the prompt keeps its start, so most of it is cached
    sess.say("And one more?", **opts)
    assert sess.last_stats["truncated_turns"] >= st["truncated_turns"]
    assert sess.last_stats["cached_tokens"] > 0
    # a message that cannot fit alone: plain words, not kept, the next request works
    long = "sea " * 300
    n = len(eng.chat_ids([system, _msg("user", long)]))
    with pytest.raises(ContextOverflow) as e:
        sess.say(long, **opts)
    assert str(e.value) == (f"your message with the system prompt is {n:,} tokens; this model "
                            "holds 192 with the reply (max_tokens 24): shorten it or lower "
                            "max_tokens")
    assert sess.history[:len(before)] == before and len(sess.history) == len(before) + 2
    hist = list(sess.history)
    sess.say("Hi", **opts)
    assert sess.last_stats["finish_reason"] == "length" and len(sess.history) == len(hist) + 2
    with pytest.raises(ContextOverflow, match="the prompt is 200 tokens; this model holds 192"):
        _toks(sess, {"prompt_ids": [1] * 200, "options": opts})
    for bad in ([{"role": "wizard", "content": "x"}], "hello", [{"role": "user", "content": 1}]):
        with pytest.raises(BadOption):
            _toks(sess, {"messages": bad, "options": opts})
    with pytest.raises(BadOption, match="exactly one of"):
        _toks(sess, {"options": opts})
    sess.say("Still there?", **opts)
    assert sess.last_stats["completion_tokens"] == 24


def test_continue_final_message_reads_only_the_reply(llama_tiny):
    """continue_final_message (the page's Continue): the turns before the partial reply with the
    generation prompt, then the reply's tokens with no end of turn (transformers'
    apply_chat_template(continue_final_message=True)); served from the KV cache: only the reply's
    tokens past the cached prefix are read; the ids are plain decoding's on that prompt."""
    eng = llama_tiny
    sess = ChatSession(eng)
    opts = {**GREEDY, "max_tokens": 6}
    msgs = [_msg("system", "You answer briefly."), _msg("user", "Tell me about the sea.")]
    partial = "".join(t for _, t in sess.stream({"messages": msgs, "options": opts}))
    assert sess.last_stats["finish_reason"] == "length" and partial
    head = eng.chat_ids(msgs)
    req = {"messages": msgs + [_msg("assistant", partial)], "options": opts,
           "continue_final_message": True}
    got = _toks(sess, req)
    tail = eng.tokenizer().encode(partial, add_special_tokens=False)
    st = sess.last_stats
    assert sess.last_prompt_ids == head + tail
    assert st["cached_tokens"] >= len(head) and 0 < st["prefill_tokens"] <= len(tail), st
    assert st["prompt_tokens"] == len(head) + len(tail) and len(got) == 6
    same_or_near_tie(eng, "q4_0", head + tail, list(eng.generate(head + tail, 6, stop_ids=())),
                     got)
    for bad, word in [({**req, "messages": msgs}, "partial assistant reply as the last"),
                      ({"prompt_ids": head, "options": opts, "continue_final_message": True},
                       "needs messages")]:
        with pytest.raises(BadOption, match=word):
            _toks(sess, bad)


def test_cli_interactive_keeps_the_conversation(llama_tiny):
    import io

    from driver.native.cli import run_generate
    out, err = io.StringIO(), io.StringIO()
    inp = io.StringIO("Hello there.\n" + "sea " * 400 + "\nWhat next?\n\n")
    run_generate(llama_tiny.source.folder, interactive=True, max_tokens=8, temperature=0.0,
                 max_context=192, out=out, err=err, inp=inp, system="Be brief.")
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("prefill:") and "(0 cached)" in lines[0]
    assert lines[1].startswith("error: your message with the system prompt is")
    cached = int(lines[2].split("(")[1].split(" cached")[0])
    assert lines[2].startswith("prefill:") and cached > 0


def test_smollm2_multi_turn_and_speculative_chat(default_model_dir, backend):
    """SmolLM2 with the goldens' settings (f32 math, f32 KV). Speculation on the golden chats:
    plain decoding's own tokens drafted 15 at a time (every one of the 48 transformers tokens
    must come out of a verify pass's argmax), and prompt lookup on another case; then a 2-turn
    text chat through a reusing session answers as a fresh session does, turn 2 from the cache.
    (lavapipe runs a prefill-style pass of any size in ~10 s for this model: few passes.)"""
    eng = load(default_model_dir, backend=backend, max_context=384, kv="f32",
                      f16_math=False)
    gold = load_smollm2_chat()
    n = gold["max_new_tokens"]
    c0, c1 = gold["cases"][:2]
    got = eng._run(_collect(generate_speculative(
        eng, c0["prompt_ids"], n, 15, "lookup", drafter=Oracle(len(c0["prompt_ids"]),
                                                              c0["greedy_ids"], 49152),
        stop_ids=())))
    assert got == c0["greedy_ids"]
    sp = eng.last_stats["speculative"]
    assert sp["accepted"] == sp["drafted"] and sp["verify_passes"] == 3   # 1 + 16 + 16 + 15
    sess = ChatSession(eng)
    got = _toks(sess, {"prompt_ids": c1["prompt_ids"], "options": {
        **GREEDY, "max_tokens": 16, "speculative": "lookup"}})
    assert got == c1["greedy_ids"][:16], c1["messages"]
    eng.kv_ids = []
    warm, cold = ChatSession(eng), ChatSession(eng, reuse=False)
    msgs = []
    for i, text in enumerate(["What is the capital of France?", "And of Italy?"]):
        msgs.append(_msg("user", text))
        opts = {"temperature": 0.0, "max_tokens": 8}
        a = "".join(warm.chat(msgs, **opts))
        st = warm.last_stats
        assert (st["cached_tokens"] > 0) == (i > 0), st
        assert a == "".join(cold.chat(msgs, **opts)), i
        msgs.append(_msg("assistant", a))
    assert "Paris" in msgs[1]["content"]
