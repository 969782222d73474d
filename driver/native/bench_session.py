"""``python -m driver bench MODEL --ttft | --speculative``: conversation benchmarks. Native only.

``--ttft``: time to first token of each turn of a chat that grows to ~3,000 tokens over 10 turns
(150 user + 150 reply tokens a turn), the KV cache reused across turns (``driver.session``), and
turn 10 again without reuse (the whole history prefilled). Target: turn 10 within 1.5x turn 1.

``--speculative``: decode tokens/s (first token to last, prefill excluded), greedy, on an
extractive task (the prompt holds a passage the reply repeats / continues) and on free chat, for:
  plain     ordinary decoding (the baseline)
  lookup    prompt-lookup drafts (real acceptance)
  forced    every round drafts k tokens that are plain decoding's own next tokens, so all are
            accepted: the mechanism's ceiling (verify cost at 100 % acceptance)
  rejected  k drafts a round that are all wrong: its floor (a wasted verify pass a round)
  replayed  with ``--replay-rounds FILE``: the rounds prompt lookup made on a real model on the same
            task (``--record-rounds FILE`` on that model: how many drafted, how many accepted,
            round by round) replayed here, plain decoding's tokens right where they were accepted
            and wrong after: a real acceptance pattern at this model's cost
  draft, draft-forced  with ``--draft MODEL``: the draft model's real drafts, and the draft model
            run for its cost but plain decoding's tokens verified (100 % acceptance)
Every greedy mode's output is checked against plain decoding's (column "same"). Also the GPU time
of one decode step and of one verify pass of 2 .. 16 rows (``pass_costs``): a round's cost in
decode steps, whatever the acceptance. ``--profile`` first: the verify pass by op, per pass size,
with both LM-head variants (``verify_profile``).
On random weights (``synth:...``) acceptance of real drafts is meaningless (the model does not
repeat its prompt): read forced / rejected, which bracket what speculation costs and gains at a
given acceptance. Prompts are token ids (random for a model without a tokenizer, else text
through the chat template).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

PASSAGE = (
    "The lighthouse stood at the end of a long spit of grey shingle, and for forty years the same "
    "family had kept its lamp. Every evening the keeper climbed the ninety-one steps, trimmed the "
    "wick, polished the great lens until it shone, and wrote the weather into a ledger bound in "
    "green cloth. Ships passed in the night without ever learning his name. In winter the spray "
    "froze on the gallery rail, and in summer the swallows nested under the eaves of the oil "
    "store. When the light was finally made automatic, the ledger was sent to a museum, where it "
    "lies open at a page describing a storm that nobody else remembers.")
CHAT = "Write a short story about a keeper of a lighthouse who finds a message in a bottle."


def _prompts(eng, quick: bool) -> dict[str, list[int]]:
    """Token ids of the two tasks: chat-templated text where the model has a tokenizer and a
    template, else random ids (a passage followed by its first half: 'continue it')."""
    from driver.chat import ChatTemplateError
    from driver.loader import ModelError
    try:
        eng.tokenizer()
        eng.chat_template()
        text = PASSAGE if not quick else PASSAGE[:200]
        return {"extractive": eng.chat_ids([{"role": "user", "content":
                                              "Repeat this passage word for word:\n\n" + text}]),
                "chat": eng.chat_ids([{"role": "user", "content": CHAT}])}
    except (ModelError, ChatTemplateError, OSError):   # synthetic models: no tokenizer, ids only
        rng = random.Random(0)
        V = eng.cfg.vocab_size
        p = [rng.randrange(V) for _ in range(40 if quick else 200)]
        return {"extractive": p + p[:len(p) // 2],
                "chat": [rng.randrange(V) for _ in range(16 if quick else 64)]}


async def _timed(agen) -> list[int]:
    return [t async for t in agen]


def pass_costs(eng, ks=(1, 2, 4, 8), reps: int = 20, ctx: int = 256) -> dict:
    """GPU ms of one decode step and of one verify pass of k + 1 rows (body + k + 1 heads) at
    position ``ctx``, each program submitted ``reps`` times back to back and timed to completion:
    what a round costs in decode steps, whatever the acceptance."""
    from driver.sampler import Sampling
    from driver.speculative import Verifier, verify_nb
    G = eng.graph
    samp = Sampling().runtime(eng.cfg.vocab_size)

    from .bench import submit_ms

    async def go():
        rt = eng._rt(samp, ctx, 1, 1)
        G.decode.write_uniforms(rt)
        out = {"decode_ms": await submit_ms(eng.gpu, G.decode.program(rt), reps)}
        for k in ks:
            v = Verifier(eng, verify_nb(k + 1))
            rt = eng._rt(samp, ctx, k + 1, ctx)
            v.body().write_uniforms(rt)
            G.head.write_uniforms(rt)
            out[f"verify_{k + 1}_rows_ms"] = await submit_ms(eng.gpu, v.program(rt, k + 1, False),
                                                             reps)
        return out

    eng.kv_ids = []     # the timed programs write K/V rows
    return eng._run(go())


def verify_profile(eng, ns=(2, 3, 5, 9), reps: int = 10, ctx: int = 256,
                   long_ctx: int | None = None) -> dict:
    """Where a verify pass's GPU time goes (``--speculative --profile``): per pass size n (body
    compiled for nb = the power of two >= n, as generate_speculative does; n = 5 also for nb = 5)
    the body's GPU time by op (``bench.op_profile``: each op's dispatches replayed alone), the
    decode step's by op, and the whole pass (body + heads) with the per-row decode head and with
    one small-M head pass (``VERIFY_HEAD_MULTI``), in ms and in decode steps. ``long_ctx``: n = 5
    also at that context (past DecodeOptions.short_ctx the verify body's attention is the split-K
    pair, not the one-pass kernel), against a decode step at that context."""
    from driver.sampler import Sampling
    from driver.speculative import Verifier, verify_nb

    from .bench import op_profile
    G = eng.graph
    samp = Sampling().runtime(eng.cfg.vocab_size)

    async def timed(prog, runs):
        eng.gpu.submit(prog)
        await eng.gpu.sync()
        t = time.perf_counter()
        for _ in range(runs):
            eng.gpu.submit(prog)
        await eng.gpu.sync()
        return 1e3 * (time.perf_counter() - t) / runs

    res: dict = {}

    async def go():
        rt = eng._rt(samp, ctx, 1, 1)
        G.decode.write_uniforms(rt)
        out = res
        out.update({"decode_ms": await timed(G.decode.program(rt), 2 * reps),
                    "decode_ops": await op_profile(eng, G.decode, rt, 2 * reps), "passes": []})
        cases = [(n, verify_nb(n), False, ctx) for n in ns]
        cases += [(n, n, False, ctx) for n in ns if n == 5 and verify_nb(n) != 5]
        if G._fits("quant_x", fmt="q4_0", cols=eng.cfg.hidden_size, nb=8) and \
                G.wdims("layers.0.feed_forward.w1")["fmt"] == "q4_0":
            cases += [(n, verify_nb(n), True, ctx) for n in ns if n == 5]
        if long_ctx:
            cases += [(n, verify_nb(n), False, long_ctx) for n in ns if n == 5]
        for n, nb, xq, at in cases:
            if xq:
                await xq_case(n, nb)
                continue
            rt = eng._rt(samp, at, n, at)
            row = {"n": n, "nb": nb}
            if at != ctx:
                rd = eng._rt(samp, at, 1, 1)
                G.decode.write_uniforms(rd)
                row.update(ctx=at, decode_ms=await timed(G.decode.program(rd), 2 * reps))
            for multi in (False, True):
                v = Verifier(eng, nb, head_multi=multi)
                v.write_uniforms(rt)
                row["multi_head_ms" if multi else "row_head_ms"] = await timed(
                    v.program(rt, n, False), reps)
            body = G.record_verify(nb)
            body.write_uniforms(rt)
            row["body_ms"] = await timed(body.program(rt), reps)
            row["ops"] = await op_profile(eng, body, rt, reps)
            vh, sampler, _ = G.record_verify_head(nb)
            vh.write_uniforms(rt)
            row["head_multi_lm_ms"] = await timed(vh.program(rt), reps)
            G.head.write_uniforms(rt)
            row["head_one_row_ms"] = await timed(G.head.program(rt), reps)
            out["passes"].append(row)
        return out

    async def xq_case(n, nb):
        """The same pass with graph.VERIFY_XQ (x quantized once by quant_x) on a body recorded
        for it, whatever the flag's default; the default body is put back after."""
        from driver import graph
        saved, old = G.verifiers.pop(nb, None), graph.VERIFY_XQ
        graph.VERIFY_XQ = not old
        try:
            rt = eng._rt(samp, ctx, n, ctx)
            row = {"n": n, "nb": nb, "xq": not old}
            v = Verifier(eng, nb, head_multi=False)
            v.write_uniforms(rt)
            row["row_head_ms"] = await timed(v.program(rt, n, False), reps)
            v = Verifier(eng, nb, head_multi=True)
            v.write_uniforms(rt)
            row["multi_head_ms"] = await timed(v.program(rt, n, False), reps)
            body = G.record_verify(nb)
            body.write_uniforms(rt)
            row["body_ms"] = await timed(body.program(rt), reps)
            row["ops"] = await op_profile(eng, body, rt, reps)
            row["head_multi_lm_ms"] = row["head_one_row_ms"] = 0.0
        finally:
            graph.VERIFY_XQ = old
            G.verifiers[nb] = saved
        res["passes"].append(row)

    eng.kv_ids = []     # the timed programs write K/V rows
    return eng._run(go())


def format_profile(p: dict) -> list[str]:
    d = p["decode_ms"]
    lines = [f"verify profile (ctx 256; 1 step = one decode step = {d:.3f} ms):"]
    dec = {op: ms for op, _, ms in p["decode_ops"][1:]}
    lines.append("  decode step by op: " + ", ".join(
        f"{op} {ms:.3f}" for op, ms in sorted(dec.items(), key=lambda x: -x[1])))
    for r in p["passes"]:
        tag = "" if "xq" not in r else (" with quant_x (VERIFY_XQ on)" if r["xq"] else
                                          " without quant_x (VERIFY_XQ off)")
        d = r.get("decode_ms", p["decode_ms"])
        if "ctx" in r:
            tag += f" at ctx {r['ctx']} (decode step there {d:.3f} ms)"
        lines.append(
            f"  n={r['n']} nb={r['nb']}{tag}: pass with per-row heads {r['row_head_ms']:.3f} ms "
            f"({r['row_head_ms'] / d:.2f} steps), with one multi head {r['multi_head_ms']:.3f} ms "
            f"({r['multi_head_ms'] / d:.2f} steps); body {r['body_ms']:.3f} ms "
            f"({r['body_ms'] / d:.2f} steps)" + ("" if "xq" in r else
            f"; LM head: multi pass {r['head_multi_lm_ms']:.3f} ms vs {r['n']} x decode head "
            f"{r['n'] * r['head_one_row_ms']:.3f} ms"))
        total = r["ops"][0][2]
        for op, n, ms in sorted(r["ops"][1:], key=lambda x: -x[2]):
            lines.append(f"    {op:<20} {n:>5} dispatches {ms:9.3f} ms {100 * ms / total:5.1f}% "
                         f"{ms / d:6.2f} steps")
    return lines


def run_speculative_bench(eng, draft=None, quick: bool = False, k: int = 4,
                          replay: dict | None = None, lookup_only: bool = False) -> dict:
    """``replay``: recorded rounds per task ({task: {"rounds": [[drafted, accepted], ...]}}, as
    the "rounds" of a run on a real model, see ``--record-rounds``): adds the mode "replayed".
    ``lookup_only``: plain and lookup only, no pass costs (recording rounds on a CPU adapter,
    where the other modes take most of half an hour)."""
    from driver.speculative import (DraftModel, Oracle, PromptLookup, Recording, Replay,
                                    generate_speculative)
    from driver.sampler import Sampling
    n_new = 16 if quick else 128
    V = eng.cfg.vocab_size
    rows = []
    rounds: dict = {}     # task -> prompt lookup's rounds [(drafted, accepted)] in this run
    for task, ids in _prompts(eng, quick).items():
        n_new_t = min(n_new, eng.max_context - len(ids))
        eng._run(_timed(eng.generate_async(ids, 4, stop_ids=())))        # warm-up
        plain = eng._run(_timed(eng.generate_async(ids, n_new_t, stop_ids=())))
        base = dict(eng.last_stats)
        # warm-up of the verify pass (its kernels compile on first use)
        eng._run(_timed(generate_speculative(eng, ids, min(2 * k + 2, n_new_t), k, "lookup",
                                             drafter=Oracle(len(ids), plain, V), stop_ids=())))
        lookup = Recording(PromptLookup())
        modes = [("plain", None), ("lookup", lookup)] + ([] if lookup_only else [
                 ("forced", Oracle(len(ids), plain, eng.cfg.vocab_size)),
                 ("rejected", Oracle(len(ids), plain, eng.cfg.vocab_size, wrong=True))])
        if replay and task in replay:
            modes.append(("replayed", Replay(len(ids), plain, V, replay[task]["rounds"])))
        if draft is not None:
            modes += [("draft", DraftModel(draft, Sampling())),
                      ("draft-forced", Oracle(len(ids), plain, eng.cfg.vocab_size,
                                              inner=DraftModel(draft, Sampling())))]
        for mode, drafter in modes:
            if drafter is None:
                got, st = plain, base
            else:
                got = eng._run(_timed(generate_speculative(
                    eng, ids, n_new_t, k, "lookup", drafter=drafter, stop_ids=())))
                st = dict(eng.last_stats)
            sp = st.get("speculative") or {}
            dec_s = st.get("decode_s") or 0.0
            npass = max(1, sp.get("verify_passes", 0))
            rows.append({"task": task, "mode": mode, "prompt_tokens": len(ids),
                         "tokens": len(got), "same": got == plain,
                         "tok_s": (len(got) - 1) / dec_s if dec_s else 0.0,
                         "drafted": sp.get("drafted", 0), "accepted": sp.get("accepted", 0),
                         "verify_passes": sp.get("verify_passes", 0),
                         # per verify pass: encoding + submission, then the wait for its ids
                         "encode_ms": 1e3 * sp.get("encode_s", 0.0) / npass,
                         "wait_ms": 1e3 * sp.get("wait_s", 0.0) / npass,
                         "decode_steps": sp.get("decode_steps", len(got) - 1 if not sp else 0)})
        rounds[task] = {"prompt_tokens": len(ids), "k": k,
                        "rounds": lookup.rounds(len(ids), plain)}
        plain_tok_s = next(r["tok_s"] for r in rows if r["task"] == task and r["mode"] == "plain")
        for r in rows:
            if r["task"] == task:
                r["vs_plain"] = r["tok_s"] / plain_tok_s if plain_tok_s else 0.0
    costs = None if lookup_only else pass_costs(
        eng, ks=(1, 2, 4) if quick else (1, 2, 4, 8, 15), reps=3 if quick else 20,
        ctx=min(256, eng.max_context - 32))
    return {"k": k, "new_tokens": n_new, "speculative": rows, "pass_costs": costs,
            "lookup_rounds": rounds}


def run_ttft_bench(eng, quick: bool = False, reps: int | None = None) -> dict:
    """TTFT per turn of a growing id-level chat (random user ids, greedy replies, EOS ignored),
    the same chat run ``reps`` times from an empty cache (default 3; 1 with ``quick``): each
    turn's median, so one slow first turn (a clock ramp, a late compile) does not make the ratio."""
    from statistics import median

    from driver.session import ChatSession
    turns, user, reply = (3, 24, 8) if quick else (10, 150, 150)
    reps = reps or (1 if quick else 3)
    V = eng.cfg.vocab_size
    opts = {"max_tokens": reply, "temperature": 0.0, "ignore_eos": True}
    warm = [random.Random(1).randrange(V) for _ in range(user)]
    runs = []
    for _ in range(reps):
        rng = random.Random(1)          # the same chat every repetition
        sess = ChatSession(eng)
        eng.kv_ids = []
        list(sess.stream({"prompt_ids": warm, "options": {**opts, "max_tokens": 2}}))  # warm-up
        eng.kv_ids = []
        hist: list[int] = []
        out = []
        for i in range(turns):
            prompt = hist + [rng.randrange(V) for _ in range(user)]
            got = [t for t, _ in sess.stream({"prompt_ids": prompt, "options": opts})]
            st = sess.last_stats
            out.append({"turn": i + 1, "prompt_tokens": st["prompt_tokens"],
                        "cached_tokens": st["cached_tokens"],
                        "prefill_tokens": st["prefill_tokens"], "ttft_s": st["ttft_s"]})
            hist = prompt + got
        runs.append(out)
    out = [{**runs[0][i], "ttft_s": median(r[i]["ttft_s"] for r in runs),
            "ttft_s_runs": [r[i]["ttft_s"] for r in runs]} for i in range(turns)]
    cold = ChatSession(eng, reuse=False)
    list(cold.stream({"prompt_ids": prompt, "options": {**opts, "max_tokens": 1}}))
    return {"turns": out, "reps": reps, "ratio_last_first": out[-1]["ttft_s"] / out[0]["ttft_s"],
            "ratio_runs": [r[-1]["ttft_s"] / r[0]["ttft_s"] for r in runs],
            "last_turn_no_reuse_ttft_s": cold.last_stats["ttft_s"],
            "last_turn_no_reuse_prefill_tokens": cold.last_stats["prefill_tokens"]}


def read_rounds(path) -> dict:
    """``--replay-rounds FILE``: {task: {"rounds": [[drafted, accepted], ...]}} as written by
    ``--record-rounds``; anything else is one plain-words BadOption."""
    from driver.sampler import BadOption
    from driver.speculative import MAX_DRAFT_K
    p = Path(path)
    try:
        tasks = json.loads(p.read_text(encoding="utf-8"))["tasks"]
        out = {}
        for task, t in tasks.items():
            rs = [(int(d), int(a)) for d, a in t["rounds"]]
            if not rs or not all(0 <= a <= d <= MAX_DRAFT_K for d, a in rs):
                raise ValueError(f"task {task!r}: rounds must be [drafted, accepted] pairs with "
                                 f"0 <= accepted <= drafted <= {MAX_DRAFT_K}")
            out[task] = {"rounds": rs}
    except OSError as e:
        raise BadOption(f"--replay-rounds {p}: cannot read it ({e.strerror or e}); give the file "
                        "--record-rounds wrote") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadOption(f"--replay-rounds {p}: not a rounds file ({e}); give the file "
                        "--record-rounds wrote") from None
    return out


def write_rounds(path, res: dict) -> None:
    """``--record-rounds FILE``: prompt lookup's rounds of this run per task, with what produced
    them; written whole or not at all (temporary file, then rename)."""
    import os
    p = Path(path)
    doc = {"model": res["model"], "adapter": res["adapter"], "date": res["date"], "k": res["k"],
           "new_tokens": res["new_tokens"], "tasks": res["lookup_rounds"]}
    tmp = p.with_name(p.name + ".partial")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def run_session_bench(model, speculative: bool = False, ttft: bool = False, quick: bool = False,
                      draft=None, k: int = 4, as_json: bool = False, out=sys.stdout,
                      profile: bool = False, record_rounds=None, replay_rounds=None,
                      lookup_only: bool = False) -> dict:
    """``record_rounds``: write prompt lookup's rounds (``write_rounds``) — meaningful on a real
    model; ``replay_rounds``: replay such a file's rounds on ``model`` (mode "replayed")."""
    from . import load, load_draft
    replay = read_rounds(replay_rounds) if replay_rounds is not None else None
    if record_rounds is not None and not Path(record_rounds).parent.is_dir():
        from driver.sampler import BadOption
        raise BadOption(f"--record-rounds {record_rounds}: folder "
                        f"{Path(record_rounds).parent} does not exist")
    ctx = 512 if quick else 4096
    eng = load(model, max_context=ctx)
    res = {"model": str(model), "adapter": eng.gpu.info.get("description", ""),
           "date": time.strftime("%Y-%m-%d"), "max_context": ctx}
    dr = None
    if draft is not None:
        from driver.speculative import check_draft
        dr = load_draft(draft, eng)
        check_draft(eng, dr)
        res["draft"] = str(draft)
    if ttft:
        res["ttft"] = run_ttft_bench(eng, quick)
    if speculative and profile:
        res["verify_profile"] = verify_profile(eng, ns=(2, 5) if quick else (2, 3, 5, 9),
                                               reps=2 if quick else 10,
                                               ctx=min(256, eng.max_context - 32),
                                               long_ctx=2048 if eng.max_context >= 2080
                                               else None)
    if speculative:
        res.update(run_speculative_bench(eng, dr, quick, k, replay, lookup_only))
        if record_rounds is not None:
            write_rounds(record_rounds, res)
    eng.close()
    out.write(json.dumps(res) + "\n" if as_json else format_session(res))
    return res


def format_session(r: dict) -> str:
    lines = [f"# driver bench {r['model']} on {r['adapter']}, {r['date']}"]
    t = r.get("ttft")
    if t:
        lines.append(f"time to first token per turn (KV cache reused across turns; median of "
                     f"{t.get('reps', 1)} runs of the chat):")
        for x in t["turns"]:
            lines.append(f"  turn {x['turn']:>2}: prompt {x['prompt_tokens']:>5} tokens, "
                         f"{x['cached_tokens']:>5} cached, {x['prefill_tokens']:>4} prefilled: "
                         f"{1e3 * x['ttft_s']:8.1f} ms")
        lines.append(f"last turn / first turn: {t['ratio_last_first']:.2f}x (target <= 1.5x; each "
                     "run: " + ", ".join(f"{x:.2f}x" for x in t.get("ratio_runs", ())) + "); "
                     f"last turn without reuse ({t['last_turn_no_reuse_prefill_tokens']} tokens "
                     f"prefilled): {1e3 * t['last_turn_no_reuse_ttft_s']:.1f} ms")
    if r.get("verify_profile"):
        lines += format_profile(r["verify_profile"])
    c = r.get("pass_costs")
    if c:
        d = c["decode_ms"]
        lines.append(f"GPU time a round (ctx 256): decode step {d:.3f} ms; verify pass " + ", ".join(
            f"{key.split('_')[1]} rows {v:.3f} ms ({v / d:.2f} steps)" for key, v in c.items()
            if key != "decode_ms"))
    rows = r.get("speculative")
    if rows:
        lines.append(f"speculative decoding, greedy, k={r['k']}, up to {r['new_tokens']} new "
                     "tokens (tok/s from the first token on; same = output identical to plain):")
        lines.append(f"  {'task':<11}{'mode':<14}{'tok/s':>9}{'x plain':>9}{'accepted':>14}"
                     f"{'passes':>8}{'steps':>7}{'enc ms':>9}{'wait ms':>9}  same")
        for x in rows:
            acc = f"{x['accepted']}/{x['drafted']}" if x["drafted"] else "-"
            lines.append(f"  {x['task']:<11}{x['mode']:<14}{x['tok_s']:9.1f}{x['vs_plain']:9.2f}"
                         f"{acc:>14}{x['verify_passes']:>8}{x['decode_steps']:>7}"
                         f" {x['encode_ms']:8.2f} {x['wait_ms']:8.2f}  "
                         f"{'yes' if x['same'] else 'NO'}")
    return "\n".join(lines) + "\n"
