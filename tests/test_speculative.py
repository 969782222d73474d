"""driver.speculative on the GPU (lavapipe in CI): output identical to plain decoding, the rejection rule.

What is checked (issue 12): greedy speculation (prompt lookup at several k, forced accept / reject,
a draft model) gives plain decoding's ids on the tiny f32 model, and on q4_0 any difference starts
at a near-tie (the documented guarantee, driver/speculative.py); a draft with another vocabulary and
k out of range are refused in plain words; sampled speculation keeps the target distribution (the
rejection rule statistically, and end to end through a verify pass); ``bench --ttft --speculative
--quick`` runs. The goldens' and SmolLM2's speculation checks are in test_session.py (one model load).
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from driver import graph
from driver.loader import ModelError
from driver.sampler import BadOption, Sampling
from driver.session import ChatSession
from driver.speculative import accept_or_resample, target_dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _session_common import CFG, GREEDY, _collect, _ids, _toks, same_or_near_tie  # noqa: E402


def test_rejection_rule_keeps_the_target_distribution():
    """accept_or_resample over 40,000 draws, drafts from q (and a fixed draft): the outcomes
    follow p (chi-square, p-value > 1e-3; the wrong rule 'accept if p(d) > q(d)' fails it)."""
    p = {0: 0.45, 1: 0.3, 2: 0.15, 3: 0.05, 4: 0.05}
    q = {0: 0.1, 1: 0.5, 2: 0.1, 3: 0.2, 4: 0.1}
    rng = random.Random(0)
    n = 40000

    def chi2_pvalue(counts):
        stat = sum((counts[i] - n * p[i]) ** 2 / (n * p[i]) for i in p)
        return math.exp(-stat / 2) * (1 + stat / 2)   # chi-square survival, 4 dof (5 outcomes)

    for fixed in (None, 1, 3):
        counts = dict.fromkeys(p, 0)
        for _ in range(n):
            if fixed is None:
                u, d = rng.random(), 4
                for i, x in q.items():
                    u -= x
                    if u < 0:
                        d = i
                        break
                _, t = accept_or_resample(p, d, q, rng)
            else:
                _, t = accept_or_resample(p, fixed, None, rng)
            counts[t] += 1
        assert chi2_pvalue(counts) > 1e-3, (fixed, counts)
        assert counts[fixed if fixed is not None else 1] > 0
    wrong = dict.fromkeys(p, 0)
    for _ in range(n):   # a broken rule must be caught by the same statistic
        d = rng.choices(list(q), list(q.values()))[0]
        wrong[d if p[d] > q[d] else max(p, key=p.get)] += 1
    assert chi2_pvalue(wrong) < 1e-6


def test_target_dist_is_the_gpu_samplers():
    """The CPU distribution's support and weights follow shaders/sample.py's rules."""
    from shaders.sample import allowed_set
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(300).astype(np.float32) * 3
    hist = [5, 7, 7, 11]
    for t, k, tp, rp in [(0.7, 0, 0.9, 1.0), (1.0, 40, 1.0, 1.3), (1.3, 0, 1.0, 1.0),
                         (0.5, 10, 0.5, 0.8)]:
        d = target_dist(logits.tobytes(), Sampling(t, k, tp, rp, 0), hist)
        assert abs(sum(d.values()) - 1) < 1e-9
        if k == 0 and tp >= 1:
            assert len(d) == 300
        else:
            assert set(d) == allowed_set(logits, hist, k, tp, rp, t)
        v = logits.astype(np.float64).copy()
        if rp != 1.0:
            for i in set(hist):
                v[i] = v[i] / rp if v[i] > 0 else v[i] * rp
        ids = sorted(d)
        w = np.exp((v[ids] - v[ids].max()) / t)
        assert np.allclose([d[i] for i in ids], w / w.sum(), rtol=1e-5)
    assert target_dist(logits.tobytes(), Sampling(0.0), []) == {int(np.argmax(logits)): 1.0}


# ---- GPU ----

# ---- GPU ----
pytest.importorskip("wgpu", reason="wgpu-py is not installed")
from driver.native import load  # noqa: E402
from driver.speculative import Oracle, generate_speculative  # noqa: E402
from _session_common import tiny  # noqa: E402,F401  (fixture; backend: conftest)


@pytest.mark.parametrize("q", ["f32", "q4_0"])
def test_speculative_greedy_identical_tiny(tiny, q):
    eng = tiny[q]
    base = _ids(12, 4)
    for prompt in (base * 3 + base[:4], _ids(30, 5)):
        plain = list(eng.generate(prompt, 60, stop_ids=()))
        sess = ChatSession(eng)
        for k in (3, 7):     # verify bodies of 4 and 8 rows (compiled once per engine)
            got = _toks(sess, {"prompt_ids": prompt, "options": {**GREEDY, "max_tokens": 60,
                                                                  "speculative": "lookup",
                                                                  "draft_k": k}})
            same_or_near_tie(eng, q, prompt, plain, got)
            assert sess.last_stats["completion_tokens"] == 60
        for wrong in (False, True):
            o = Oracle(len(prompt), plain, 256, wrong=wrong)
            got = eng._run(_collect(generate_speculative(eng, prompt, 60, 7, "lookup",
                                                         drafter=o, stop_ids=())))
            sp = eng.last_stats["speculative"]
            same_or_near_tie(eng, q, prompt, plain, got)
            if got == plain:
                assert sp["accepted"] == (0 if wrong else sp["drafted"]) and sp["drafted"] > 0
    # stop ids end it as plain decoding does (the stop id not yielded)
    stop = plain[20]
    want = plain[:plain.index(stop)]
    got = eng._run(_collect(generate_speculative(eng, prompt, 60, 4, "lookup", stop_ids=(stop,))))
    assert got == want and eng.last_stats["stopped"] == "stop"


@pytest.mark.parametrize("q", ["f32", "q4_0"])
def test_verify_head_multi_matches_per_row_head(tiny, q, monkeypatch):
    """The verify pass's LM head as one small-M pass over the rows (VERIFY_HEAD_MULTI) gives
    the per-row decode head's logits (same per-row dot and reduction order: to rounding) and
    argmax ids, and greedy speculation with it gives plain decoding's output."""
    import driver.speculative as spec
    eng = tiny[q]
    prompt = _ids(30, 5)
    plain = list(eng.generate(prompt, 24, stop_ids=()))
    rows = [prompt[-1]] + plain[:4]          # a pass of 5 rows (nb = 8) at the prompt's end
    samp = Sampling().runtime(eng.cfg.vocab_size)
    got = {}
    for multi in (False, True):
        eng._run(_collect(eng.generate_async(prompt[:-1], 1, stop_ids=())))   # cache: prompt[:-1]
        v = spec.Verifier(eng, 8, head_multi=multi)
        lg = eng._run(v.run(rows, len(prompt) - 1, samp, logits=True))
        ids = eng._run(v.run(rows, len(prompt) - 1, samp, logits=False))
        got[multi] = (np.stack([np.frombuffer(x, np.float32) for x in lg]), ids)
    (a, ia), (b, ib) = got[False], got[True]
    assert a.shape == b.shape == (5, eng.cfg.vocab_size)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), np.abs(a - b).max()
    assert ia == ib == [int(i) for i in a.argmax(1)]
    monkeypatch.setattr(spec, "VERIFY_HEAD_MULTI", True)
    o = Oracle(len(prompt), plain, 256)
    out = eng._run(_collect(generate_speculative(eng, prompt, 24, 4, "lookup", drafter=o,
                                                 stop_ids=())))
    same_or_near_tie(eng, q, prompt, plain, out)
    assert eng.last_stats["speculative"]["verify_passes"] > 0


def n_quant_x(eng) -> int:
    """quant_x dispatches of a verify body: one per projection input that a q4_0 matrix reads
    (q/k/v share one; wo, w1 + w3, w2 one each), so none for a layer kept at q8_0."""
    G, n = eng.graph, 0
    for i in range(CFG["num_hidden_layers"]):
        q4 = [G.wdims(f"layers.{i}.{t}")["fmt"] == "q4_0" for t in
              ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
               "feed_forward.w1", "feed_forward.w2")]
        n += any(q4[:3]) + sum(q4[3:])
    return n


def test_verify_body_with_prequantized_x(tiny, monkeypatch):
    """graph.VERIFY_XQ (x quantized once per pass by quant_x, 4 dispatches a layer): the same
    logits as the self-quantizing verify body to rounding, and plain decoding's greedy output."""
    import driver.graph as graph
    import driver.speculative as spec
    eng = tiny["q4_0"]
    if not eng.graph.caps.packed_dot:
        pytest.skip("this adapter's WGSL lacks packed_4x8_integer_dot_product (quant_x needs it)")
    prompt = _ids(30, 5)
    plain = list(eng.generate(prompt, 24, stop_ids=()))
    rows = [prompt[-1]] + plain[:4]
    samp = Sampling().runtime(eng.cfg.vocab_size)
    got = {}
    for on in (False, True):
        monkeypatch.setattr(graph, "VERIFY_XQ", on)
        monkeypatch.setattr(eng.graph, "verifiers", {})     # bodies recorded afresh
        body = eng.graph.record_verify(8)
        n_q = sum(1 for st in body.steps if getattr(st, "kernel", None) is not None
                  and st.kernel.key.op == "quant_x")
        assert n_q == (n_quant_x(eng) if on else 0) and n_quant_x(eng) >= CFG["num_hidden_layers"]
        eng._run(_collect(eng.generate_async(prompt[:-1], 1, stop_ids=())))
        v = spec.Verifier(eng, 8)
        lg = eng._run(v.run(rows, len(prompt) - 1, samp, logits=True))
        got[on] = np.stack([np.frombuffer(x, np.float32) for x in lg])
    a, b = got[False], got[True]
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), np.abs(a - b).max()
    o = Oracle(len(prompt), plain, 256)
    out = eng._run(_collect(generate_speculative(eng, prompt, 24, 4, "lookup", drafter=o,
                                                 stop_ids=())))
    same_or_near_tie(eng, "q4_0", prompt, plain, out)


def attention_ops(body) -> dict:
    """(op, nb, one-pass) -> dispatches of the attention kernels recorded in a body (both Span
    paths: the one-pass kernel up to short_ctx and the split-K pair past it)."""
    out: dict = {}
    for st in body.steps:
        k = getattr(st, "kernel", None)
        if k is not None and k.key.op.startswith("attention"):
            d = dict(k.key.dims)
            key = (k.key.op, d.get("nb", 0), d.get("dir", 0))
            out[key] = out.get(key, 0) + 1
    return out


@pytest.mark.parametrize("q", ["f32", "q4_0"])
def test_verify_body_runs_decode_attention_per_row(tiny, q, monkeypatch):
    """A verify body (nb <= graph.VERIFY_ATTN_ROWS) dispatches attention_decode's verify variant
    (as decode picks: the one-pass kernel up to short_ctx, split-K + combine past it), never
    attention_prefill; greedy speculation with either gives plain decoding's output (forced
    drafts: every row of every pass used), with the split-K pair on the whole context too."""
    from driver.decode_options import DecodeOptions
    eng = tiny[q]
    G, L = eng.graph, CFG["num_hidden_layers"]
    prompt = _ids(30, 5)
    old = G.opts
    try:
        for opts in (old, DecodeOptions(short_ctx=0)):
            G.set_decode(opts)
            monkeypatch.setattr(G, "verifiers", {})         # bodies recorded with these options
            got = attention_ops(G.record_verify(8))
            want = {}
            if 0 < opts.short_ctx:
                want[("attention_decode", 8, 1)] = L
            if opts.short_ctx < G.max_ctx:
                want[("attention_decode", 8, 0)] = want[("attention_combine", 8, 0)] = L
            assert got == want, (opts, got)
            plain = list(eng.generate(prompt, 40, stop_ids=()))
            for wrong in (False, True):
                o = Oracle(len(prompt), plain, 256, wrong=wrong)
                out = eng._run(_collect(generate_speculative(eng, prompt, 40, 4, "lookup",
                                                             drafter=o, stop_ids=())))
                same_or_near_tie(eng, q, prompt, plain, out)
            assert eng.last_stats["speculative"]["verify_passes"] > 0
        monkeypatch.setattr(graph, "VERIFY_ATTN_ROWS", 4)   # larger bodies: the prefill kernel
        monkeypatch.setattr(G, "verifiers", {})
        assert set(attention_ops(G.record_verify(8))) == {("attention_prefill", 0, 0)}
    finally:
        G.set_decode(old)


def test_verify_body_honors_multi_tuned(tiny, monkeypatch):
    """An entry of shaders.multi's tuning tables (what ``python -m shaders bench --multi``
    prints, keyed (op, rows, cols, nb)) is the kernel the verify body records for that weight
    shape; other shapes keep the default rule; greedy speculation still gives plain's output."""
    from shaders import multi, registry
    eng = tiny["q4_0"]
    G = eng.graph
    Q, H = G.dims["Q"], G.dims["H"]                      # wq and wo: (Q, H) and (H, Q)
    entry = {("matvec_multi", Q, H, 8): (32, 2, 0), ("matvec_multi", H, Q, 8): (32, 2, 0)}
    monkeypatch.setattr(multi, "MULTI_TUNED", entry)
    monkeypatch.setattr(multi, "MULTI_TUNED_XQ", entry)
    monkeypatch.setattr(registry, "_CACHE", {})          # kernels rendered afresh
    monkeypatch.setattr(G, "verifiers", {})
    seen = {}
    for st in G.record_verify(8).steps:
        k = getattr(st, "kernel", None)
        if k is not None and k.key.op == "matvec_multi":
            d = dict(k.key.dims)
            seen[(d["r"], d["c"])] = (k.workgroup_size[0], k.meta["rows_per_wg"],
                                      int(k.key.subgroups))
    assert seen[(Q, H)] == seen[(H, Q)] == (32, 2, 0), seen
    kv = G.dims["KV"]
    assert seen[(kv, H)] != (32, 2, 0), seen             # wk / wv: not in the table

    def wq_kernel(nb):
        for st in G.record_verify(nb).steps:
            k = getattr(st, "kernel", None)
            if k is not None and k.key.op == "matvec_multi" and \
                    (dict(k.key.dims)["r"], dict(k.key.dims)["c"]) == (Q, H):
                return k.workgroup_size[0], k.meta["rows_per_wg"], int(k.key.subgroups)
    # a body of 4 rows takes the entry for 8 (the smallest tuned nb above it); 16 has none
    assert wq_kernel(4) == (32, 2, 0) and wq_kernel(16) != (32, 2, 0)
    prompt = _ids(30, 5)
    plain = list(eng.generate(prompt, 24, stop_ids=()))
    out = eng._run(_collect(generate_speculative(eng, prompt, 24, 4, "lookup",
                                                 drafter=Oracle(len(prompt), plain, 256),
                                                 stop_ids=())))
    same_or_near_tie(eng, "q4_0", prompt, plain, out)


def test_draft_model_same_output_and_bad_drafts(tiny, backend, tmp_path):
    """The f32 packing drafts for the q4_0 one (same tokenizer): output identical to plain; a
    draft with another vocabulary is refused in plain words; k out of range too."""
    target, draft = tiny["q4_0"], tiny["f32"]
    prompt = _ids(30, 5)
    plain = list(target.generate(prompt, 40, stop_ids=()))
    sess = ChatSession(target, draft=draft)
    got = _toks(sess, {"prompt_ids": prompt, "options": {**GREEDY, "max_tokens": 40,
                                                          "speculative": "draft"}})
    same_or_near_tie(target, "q4_0", prompt, plain, got)
    sp = sess.last_stats["speculative"]
    assert sp["drafted"] > 0 and sp["accepted"] > 0
    from _checkpoints import write_hf
    from weights_tool.pack import pack
    write_hf(tmp_path / "hf", seed=3, **{**CFG, "vocab_size": 384})
    pack(tmp_path / "hf", tmp_path / "v384", quant="f32", progress=False)
    other = load(tmp_path / "v384", backend=backend, max_context=64, kv="f32", chunk=16)
    with pytest.raises(ModelError, match="vocabulary has 384 tokens and the model's 256"):
        ChatSession(target, draft=other)
    for k in (0, 16):
        with pytest.raises(BadOption, match="draft_k"):
            _toks(sess, {"prompt_ids": prompt, "options": {"draft_k": k, "speculative": "draft"}})
    with pytest.raises(BadOption, match="needs a draft model"):
        _toks(ChatSession(target), {"prompt_ids": prompt, "options": {"speculative": "draft"}})
    assert _toks(sess, {"prompt_ids": prompt, "options": {**GREEDY, "max_tokens": 40}}) == plain
    assert sess.last_stats["cached_tokens"] > 0


def test_sampled_speculation_keeps_the_distribution(tiny):
    """temperature 1, top_k 2 (two outcomes a step): the first token is drawn by the GPU sampler,
    the second through a verify pass of a fixed draft and the rejection rule. 500 runs
    (seeds 0..499): the joint counts of (first, second) follow p1(a) p2(b | a) computed from the
    model's logits (chi-square p-value > 1e-3)."""
    eng = tiny["f32"]
    prompt = _ids(10, 6)
    s = Sampling(1.0, 2, 1.0, 1.0, 0)
    p1 = target_dist(eng.logits(prompt)[-1].tobytes(), s, prompt)
    joint = {}
    for a, pa in p1.items():
        p2 = target_dist(eng.logits(prompt + [a])[-1].tobytes(), s, prompt + [a])
        for b, pb in p2.items():
            joint[(a, b)] = pa * pb
    draft_tok = max(joint, key=joint.get)[1]

    class Fixed:
        async def propose(self, seq, n):
            return [draft_tok], None

    counts = dict.fromkeys(joint, 0)
    n = 500
    eng.kv_ids = []
    for seed in range(n):
        got = eng._run(_collect(generate_speculative(
            eng, prompt, 3, 1, "lookup", drafter=Fixed(), temperature=1.0, top_k=2, seed=seed,
            stop_ids=(), reuse=True)))
        counts[tuple(got[:2])] += 1
        assert eng.last_stats["speculative"]["verify_passes"] == 1
    assert min(joint.values()) > 0.02, joint       # every outcome is seen often enough
    stat = sum((counts[c] - n * p) ** 2 / (n * p) for c, p in joint.items())
    dof = len(joint) - 1
    from math import exp, factorial
    pval = exp(-stat / 2) * sum((stat / 2) ** i / factorial(i) for i in range(dof // 2)) \
        if dof % 2 == 0 else None
    if pval is None:   # odd dof: compare against the 99.9 % quantile bound for dof <= 3
        assert stat < {1: 10.83, 3: 16.27}[dof], (counts, joint)
    else:
        assert pval > 1e-3, (counts, joint)


def test_bench_ttft_and_speculative_quick(tiny, tmp_path):
    """`python -m driver bench MODEL --ttft --speculative --quick --json`: turns reuse the cache,
    every speculative mode's output equals plain decoding's, forced drafts are all accepted,
    rejected ones never, and the per-round GPU costs are there."""
    import io
    import json

    from driver.native.bench_session import run_session_bench
    out = io.StringIO()
    # a replayed pattern with partial acceptance, a round without drafts, a full round
    rounds = tmp_path / "rounds.json"
    rounds.write_text(json.dumps({"tasks": {"extractive": {"rounds": [[3, 1], [0, 0], [2, 2]]}}}))
    run_session_bench(tiny["q4_0"].source.folder, speculative=True, ttft=True, quick=True,
                      as_json=True, out=out, profile=True, replay_rounds=rounds,
                      record_rounds=tmp_path / "rec.json")
    r = json.loads(out.getvalue())
    # --profile: the verify pass by op for n = 2 and 5 (nb 2, 8, and 5), both head variants
    vp = r["verify_profile"]
    xq = [(5, 8)] if tiny["q4_0"].graph.caps.packed_dot else []   # and the quant_x body
    assert [(x["n"], x["nb"]) for x in vp["passes"]] == [(2, 2), (5, 8), (5, 5)] + xq
    for x in vp["passes"]:
        ops = {op: n for op, n, _ in x["ops"]}
        L = CFG["num_hidden_layers"]   # wq wk wv wo w2 and w1+w3 a layer
        assert ops["matvec_multi"] == 5 * L and ops["gate_up_multi"] == L
        # attention: decode's kernels per row (ctx 256: the one-pass one up to short_ctx 512)
        assert ops["attention_decode"] == L and "attention_prefill" not in ops
        xq_on = x.get("xq", graph.VERIFY_XQ) and tiny["q4_0"].graph.caps.packed_dot
        assert ops.get("quant_x", 0) == (n_quant_x(tiny["q4_0"]) if xq_on else 0)
        assert min(x["row_head_ms"], x["multi_head_ms"], x["body_ms"]) > 0
    from driver.native.bench_session import format_profile
    assert "with one multi head" in "\n".join(format_profile(vp))
    turns = r["ttft"]["turns"]
    assert turns[0]["cached_tokens"] == 0 and all(t["cached_tokens"] > 0 for t in turns[1:])
    assert r["ttft"]["ratio_last_first"] > 0 and r["ttft"]["last_turn_no_reuse_prefill_tokens"] \
        == turns[-1]["prompt_tokens"]
    modes = {(x["task"], x["mode"]): x for x in r["speculative"]}
    assert {m for _, m in modes} == {"plain", "lookup", "forced", "rejected", "replayed"}
    assert ("chat", "replayed") not in modes      # only the task the file has rounds for
    rp = modes[("extractive", "replayed")]
    assert rp["same"] and 0 < rp["accepted"] < rp["drafted"] and rp["decode_steps"] > 0
    # --record-rounds: this run's lookup rounds per task, each consistent with its lookup row
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["k"] == 4 and not list(tmp_path.glob("*.partial"))
    for task in ("extractive", "chat"):
        rs = rec["tasks"][task]["rounds"]
        lk = modes[(task, "lookup")]
        assert sum(a for _, a in rs) == lk["accepted"] and sum(d for d, _ in rs) == lk["drafted"]
        assert sum(1 for d, _ in rs if d) == lk["verify_passes"]
    for key, x in modes.items():
        assert x["same"], key      # this model and prompt have no near-tie (q4_0: test above)
        if x["mode"] == "forced" and x["same"]:
            assert x["accepted"] == x["drafted"] > 0
        if x["mode"] == "rejected":
            assert x["accepted"] == 0 and x["verify_passes"] > 0
    assert r["pass_costs"]["decode_ms"] > 0 and r["pass_costs"]["verify_5_rows_ms"] > 0


def test_recording_and_replay_drafters():
    """Recording turns its log into (drafted, accepted) against the final output; Replay drafts
    exactly that: the first ``accepted`` tokens right, the rest wrong, 0 = no drafts."""
    import asyncio

    from driver.speculative import Recording, Replay

    class Fixed:
        def __init__(self, props):
            self.props = iter(props)

        async def propose(self, seq, n):
            return next(self.props), None

    out = [5, 6, 7, 8, 9, 10]
    rec = Recording(Fixed([[5, 6, 0], [], [8, 9, 10]]))
    run = asyncio.run
    run(rec.propose([1, 2], 3))              # before out[0]: 5, 6 right, 0 wrong
    run(rec.propose([1, 2, 5, 6, 7], 3))     # no match
    run(rec.propose([1, 2, 5, 6, 7], 3))     # out[3:] = 8, 9, 10: all right
    assert rec.rounds(2, out) == [(3, 2), (0, 0), (3, 3)]
    rep = Replay(2, out, 11, [(3, 2), (0, 0)])
    assert run(rep.propose([1, 2], 3)) == ([5, 6, 8], None)
    assert run(rep.propose([1, 2, 5], 3)) == ([], None)
    assert run(rep.propose([1, 2, 5], 2)) == ([6, 7], None)   # rounds repeat; n caps them
    with pytest.raises(BadOption, match="no recorded rounds"):
        Replay(2, out, 11, [])


@pytest.mark.parametrize("text,words", [
    (None, ["cannot read it"]),
    ("{not json", ["not a rounds file"]),
    ('{"tasks": {"extractive": {"rounds": [[2, 3]]}}}', ["0 <= accepted <= drafted"]),
    ('{"tasks": {"chat": {"rounds": []}}}', ["0 <= accepted <= drafted"]),
    ('{"rounds": [[1, 1]]}', ["not a rounds file"]),
])
def test_replay_rounds_bad_file_one_line(tmp_path, capsys, text, words):
    """`driver bench MODEL --speculative --replay-rounds FILE` with a missing or malformed FILE:
    one error line naming the file, exit 2, before any model is loaded."""
    from driver.native.cli import main
    f = tmp_path / "rounds.json"
    if text is not None:
        f.write_text(text)
    rc = main(["bench", "synth:llama3-tiny:q4_0", "--speculative", "--replay-rounds", str(f)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --replay-rounds ")
    assert str(f) in err[0] and all(w in err[0] for w in words), err
