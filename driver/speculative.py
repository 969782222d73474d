"""Speculative decoding: drafted tokens verified by the target model k + 1 at a time.

Pure Python (runs in Pyodide). A round: a drafter proposes up to k next tokens (``PromptLookup``:
copied from the last n-gram match in the prompt / history, no second model; ``DraftModel``: a
small model with the same tokenizer, on its own engine and KV cache); the target runs ONE pass over
[last token, d1 .. dk] at the cache's end (``Graph.record_verify``: the prefill chain, causal
attention over the cache, with the projections by the small-M kernels of shaders/multi.py: each
weight read once for all rows), then its decode LM head and sampler once per row, and reads back
the k + 1 argmax ids (a few bytes). The longest prefix of drafts equal to them is accepted plus
the target's own token after it; the KV cache "rolls back" past the rejected rows by its length
alone (``Engine.kv_ids``: rows past it are rewritten before anything reads them). With no draft,
the round is one ordinary decode step.

What is guaranteed (greedy): every emitted token is the argmax of the target's logits for the
sequence so far, as plain decoding's is, but a verified row's logits (and the K/V of accepted
tokens) come from the verify kernels, not the decode ones. The per-row dot products are decode's
(same chunk order and unpacking), and so is attention (attention_decode's verify variant: each row
decode's chunks and sums at its own context); the RMSNorms are not fused, q/k/v are three matvecs,
all in f32: the logits agree to rounding, measured on lavapipe at 2.4e-7 (f32
packing) and 2-3e-5 (q4_0, int8 activations) of max |logit| (tests/test_session.py). So the output
is plain decoding's token for token wherever no top-2 logit margin is below that difference: the
tests check identity on the goldens' models, SmolLM2's golden chats and the tiny f32 model, and on
q4_0 that any difference starts at such a near-tie. Bitwise identity would need batched variants
of the other decode kernels (the fused norms, qkv_rope_decode).

With temperature > 0 (or a repetition penalty) the k + 1 rows' logits are read back and the
standard rejection rule runs here: draft d with draft probability q(d) is accepted with
probability min(1, p(d) / q(d)) (q one-hot for prompt lookup), a rejection samples from
max(0, p - q) renormalised, full acceptance samples one more token from p; the output then has
exactly the distribution p of the GPU sampler (same temperature / penalty / top-k (<= 64) / top-p
rules, ``shaders/sample.py``), not its seeded draws. This path costs CPU time per row on big
vocabularies (pure Python over the logits).
"""

from __future__ import annotations

import math
import random
import struct
import time
from array import array

from . import gpu as g
from .loader import ModelError
from .sampler import BadOption, Sampling

KMAX = 64            # the GPU sampler's candidate bound (shaders/sample.py)
# The verify pass's LM head: False, the decode head (LM head matvec + sampler) once per row, the
# head weights read k + 1 times; True, ONE matvec_multi pass over the k + 1 rows (each head byte
# read once; Graph.record_verify_head), then the sampler per row. Which is faster depends on the
# small-M kernels (shaders/bench_multi.py); ``python -m driver bench MODEL --speculative
# --profile`` times both ("head per row" / "head multi").
VERIFY_HEAD_MULTI = False
MAX_DRAFT_K = 15     # drafted tokens a verify pass: its body is recorded for 16 rows at most
# A verify pass is submitted in pieces of at most this many ops (the first piece a quarter of it),
# so the GPU starts on the first layers while the CPU still encodes the rest: a round cannot
# pipeline with the next one (the drafts depend on its ids), and encoding a whole 8B-shape pass
# (~500 dispatches, ~6 us of CPU each through wgpu-py) took 2.5-3.5 ms of a ~14 ms round on the
# H200, all of it before the GPU had anything to do (2026-12-03; ``bench --speculative``'s enc ms /
# wait ms columns). Pieces of 16-64 ops measured alike, 128 / 256 / one submission slower
# (docs/PERFORMANCE.md): a piece is encoded faster than it runs, so the GPU rarely waits.
SUBMIT_OPS = 64
NGRAMS = (3, 2)      # prompt lookup: longest n-gram first

__all__ = ["PromptLookup", "DraftModel", "Oracle", "Replay", "Recording", "check_draft",
           "generate_speculative", "target_dist", "accept_or_resample"]


# ---- drafters: propose(seq, n) -> (drafts, q or None) ----
class PromptLookup:
    """Drafts copied from the most recent earlier occurrence of the sequence's last n-gram
    (n = 3, then 2): an index n-gram -> position after it, grown as the sequence grows."""

    def __init__(self):
        self.index: dict[tuple, int] = {}
        self.done = 0               # positions i < done have their n-grams ending at i indexed

    def _grow(self, seq: list[int]) -> None:
        # n-grams ending at i (exclusive) with a continuation seq[i]: i < len(seq)
        for i in range(max(1, self.done), len(seq)):
            for n in NGRAMS:
                if i >= n:
                    self.index[tuple(seq[i - n:i])] = i
        self.done = max(self.done, len(seq))

    async def propose(self, seq: list[int], n: int):
        self._grow(seq)
        for m in NGRAMS:
            at = self.index.get(tuple(seq[-m:])) if len(seq) > m else None
            if at is not None:
                return seq[at:at + n], None
        return [], None


class DraftModel:
    """Drafts from a small model with the target's tokenizer, on its own engine and KV cache
    (reused across rounds: each round prefills what it has not seen, >= 1 token)."""

    def __init__(self, engine, sampling: Sampling):
        self.engine, self.samp = engine, sampling
        self.rng = random.Random(sampling.seed + 1)

    async def propose(self, seq: list[int], n: int):
        eng = self.engine
        n = min(n, eng.max_context - len(seq))
        if n < 1:
            return [], None
        s = self.samp
        if s.temperature <= 0 and s.repetition_penalty == 1.0:
            out = [t async for t in eng.generate_async(seq, n, stop_ids=(), reuse=True)]
            return out, None
        # sampled: each draft token drawn here from the draft's distribution q (read back)
        rng = self.rng
        drafts, qs = [], []
        for _ in range(n):
            ctx = seq + drafts
            async for _t in eng.generate_async(ctx, 1, stop_ids=(), reuse=True):
                pass
            raw = await eng.gpu.read(eng.graph.logits, 0, 4 * eng.cfg.vocab_size)
            q = target_dist(raw, s, ctx)
            drafts.append(_draw(q, rng))
            qs.append(q)
        return drafts, qs


class Oracle:
    """Bench drafter: proposes a known continuation (``future``: what plain decoding produced)
    so every draft is accepted (``wrong``: each draft off by one id, so none is), after asking
    ``inner`` for its drafts (the cost of a real drafter, its proposal discarded)."""

    def __init__(self, n_prompt: int, future: list[int], vocab: int, wrong: bool = False,
                 inner=None):
        self.n0, self.future, self.vocab, self.wrong, self.inner = (n_prompt, future, vocab,
                                                                    wrong, inner)

    async def propose(self, seq: list[int], n: int):
        if self.inner is not None:
            await self.inner.propose(seq, n)
        g0 = len(seq) - self.n0
        d = self.future[g0:g0 + n]
        if self.wrong:
            d = [(t + 1) % self.vocab for t in d]
        return d, None


class Replay:
    """Bench drafter: replays recorded rounds ``[(drafted, accepted), ...]`` (a real model's prompt
    lookup on the same task, ``bench --record-rounds``) on another model: round i drafts
    ``drafted`` tokens of ``future`` (plain decoding's output) of which the first ``accepted`` are
    right and the rest off by one id, so the verify pass sees that acceptance pattern; 0 drafted =
    a round with no n-gram match (one decode step). The rounds repeat if the run outlasts them."""

    def __init__(self, n_prompt: int, future: list[int], vocab: int, rounds: list):
        if not rounds:
            raise BadOption("no recorded rounds to replay")
        self.n0, self.future, self.vocab, self.rounds = n_prompt, future, vocab, rounds
        self.i = 0

    async def propose(self, seq: list[int], n: int):
        drafted, accepted = self.rounds[self.i % len(self.rounds)]
        self.i += 1
        g0 = len(seq) - self.n0
        d = self.future[g0:g0 + min(n, drafted)]
        return [t if j < accepted else (t + 1) % self.vocab for j, t in enumerate(d)], None


class Recording:
    """Wraps a drafter and logs each proposal as (sequence length, drafts): ``rounds(output)``
    turns the log into [(drafted, accepted)] once the greedy output is known."""

    def __init__(self, inner):
        self.inner, self.log = inner, []

    async def propose(self, seq: list[int], n: int):
        d, q = await self.inner.propose(seq, n)
        self.log.append((len(seq), [int(t) for t in d]))
        return d, q

    def rounds(self, n_prompt: int, output: list[int]) -> list[tuple[int, int]]:
        out = []
        for length, d in self.log:
            g0, a = length - n_prompt, 0
            while a < len(d) and g0 + a < len(output) and d[a] == output[g0 + a]:
                a += 1
            out.append((len(d), a))
        return out


def check_draft(target, draft) -> None:
    """One plain-words ModelError unless ``draft`` can draft for ``target``: same vocabulary size
    and the same tokenizer (tokenizer.json bytes, where the models have one)."""
    tv, dv = target.cfg.vocab_size, draft.cfg.vocab_size
    if tv != dv:
        raise ModelError(f"the draft model's vocabulary has {dv:,} tokens and the model's "
                         f"{tv:,}: a draft model must share the model's tokenizer")
    texts = []
    for eng in (target, draft):
        try:
            p = eng.source.tokenizer_path("tokenizer.json")
            texts.append(p.read_bytes() if p.is_file() else None)
        except (ModelError, OSError):
            texts.append(None)
    if texts[0] != texts[1]:
        raise ModelError("the draft model's tokenizer differs from the model's (tokenizer.json): "
                         "a draft model must share the model's tokenizer")


# ---- the target's distribution (the GPU sampler's rules) and the rejection rule ----
def target_dist(raw: bytes, s: Sampling, history) -> dict[int, float]:
    """{id: probability} the GPU sampler draws from for logits ``raw`` (f32 bytes) after
    ``history``: repetition penalty over its distinct ids, temperature, then (top_k or top_p
    set) the top min(top_k or 64, 64) by logit (ties: lower id) and the shortest prefix whose
    mass reaches top_p. Greedy (temperature 0 or top_k 1): {argmax: 1}."""
    v = array("f")
    v.frombytes(raw)
    if s.repetition_penalty != 1.0:
        p = s.repetition_penalty
        for i in set(history):
            if 0 <= i < len(v):
                v[i] = v[i] / p if v[i] > 0 else v[i] * p
    if s.temperature <= 0 or s.top_k == 1:
        best = max(range(len(v)), key=lambda i: (v[i], -i))
        return {best: 1.0}
    t = float(s.temperature)
    if s.top_k == 0 and s.top_p >= 1.0:
        m = max(v)
        e = [math.exp((x - m) / t) for x in v]
        z = math.fsum(e)
        return {i: x / z for i, x in enumerate(e) if x > 0.0}
    import heapq
    k = min(s.top_k or KMAX, KMAX, len(v))
    order = [i for _, i in heapq.nsmallest(k, ((-x, i) for i, x in enumerate(v)))]
    m = v[order[0]]
    e = [math.exp((v[i] - m) / t) for i in order]
    z = math.fsum(e)
    kept, before = 0, 0.0
    for x in e:
        if before < s.top_p * z:
            kept += 1
            before += x
    kept = max(1, kept)
    zk = math.fsum(e[:kept])
    return {order[j]: e[j] / zk for j in range(kept)}


def _draw(p: dict[int, float], rng: random.Random) -> int:
    u = rng.random() * math.fsum(p.values())
    acc = 0.0
    last = None
    for i, x in p.items():
        acc += x
        last = i
        if u < acc:
            return i
    return last


def accept_or_resample(p: dict[int, float], d: int, q: dict[int, float] | None,
                       rng: random.Random) -> tuple[bool, int]:
    """The rejection rule for draft ``d`` (drawn from ``q``; None: a deterministic draft, q
    one-hot): (True, d) with probability min(1, p(d) / q(d)), else (False, a token drawn from
    max(0, p - q) renormalised). Over the draft's randomness the result is distributed as p."""
    pd = p.get(d, 0.0)
    qd = 1.0 if q is None else q.get(d, 0.0)
    if qd > 0.0 and rng.random() < min(1.0, pd / qd):
        return True, d
    if q is None:
        res = {i: x for i, x in p.items() if i != d}
    else:
        res = {i: x - q.get(i, 0.0) for i, x in p.items() if x > q.get(i, 0.0)}
    if not res or math.fsum(res.values()) <= 0.0:
        res = p
    return False, _draw(res, rng)


# ---- the target's verify pass ----
def verify_nb(n: int) -> int:
    """Token rows the verify body for passes of up to ``n`` rows is compiled for: the power of two
    >= n, so that few bodies are recorded whatever k callers pick (each body takes
    64 + 16 * layers of Graph's 8192 uniform slices; the 8B shape fits 12). A pass of fewer rows
    skips the rest at run time (a uniform branch per token row, in the dots and the reduction);
    ``bench --speculative --profile`` times n = 5 on nb = 8 and nb = 5 ("n=5 nb=5")."""
    nb = 2
    while nb < n:
        nb *= 2
    return nb


class Verifier:
    """Programs of one verify pass of n <= nb rows (built once per n): the verify body
    (``Graph.record_verify``: the prefill chain with small-M projections), then per row: the
    row's final-normed x -> xlast, the decode head (LM head matvec + sampler), the sampled id ->
    readback slot 2 at 4*row (greedy) or the logits -> ``vlog`` row (sampled)."""

    SLOT = 2

    def __init__(self, engine, nb: int, head_multi: bool | None = None):
        self.e, self.nb = engine, nb
        self.head_multi = VERIFY_HEAD_MULTI if head_multi is None else head_multi
        self.progs: dict = {}
        self.pieces: dict = {}     # id(program) -> its submission pieces (see SUBMIT_OPS)
        self.vlog = None
        # seconds over this verifier's passes: uniforms + encoding + submission, then waiting for
        # the ids (the stats' "encode_s" / "wait_s": where a round's wall time goes)
        self.encode_s = self.wait_s = 0.0

    def body(self):
        return self.e.graph.record_verify(self.nb)

    def program(self, rt: dict, n: int, logits: bool) -> g.Program:
        G = self.e.graph
        key = (n, logits, self.body()._grids(rt))
        prog = self.progs.get(key)
        if prog is not None:
            return prog
        H, V = self.e.cfg.hidden_size, self.e.cfg.vocab_size
        if logits and self.vlog is None:
            self.vlog = G._buf(4 * (G.chunk + 1) * V, "spec_logits")  # (rows, V) f32
        prog = g.Program(ops=list(self.body().program(rt).ops))
        if self.head_multi:   # all rows' logits in one pass, then row i's into ``logits``
            vh, sampler, blocks = G.record_verify_head(self.nb)
            prog.extend(vh.program(rt))
            head = sampler.program(rt)
        else:
            head = G.head.program(rt)
        for i in range(n):
            if self.head_multi:
                for r0, nr, buf in blocks:
                    prog.copy(buf, 4 * nr * i, G.logits, 4 * r0, 4 * nr)
            else:
                prog.copy(G.xn, 4 * H * i, G.xlast, 0, 4 * H)
            prog.extend(head)
            if logits:
                prog.copy(G.logits, 0, self.vlog, 4 * V * i, 4 * V)
            else:
                prog.copy(G.ids, 0, G.rb[self.SLOT], 4 * i, 4)
        self.progs[key] = prog
        return prog

    def pieces_of(self, prog: g.Program) -> list[g.Program]:
        """``prog`` cut into consecutive Programs of <= SUBMIT_OPS ops (the first SUBMIT_OPS // 4),
        submitted one after the other: the same commands in the same order on the same queue."""
        got = self.pieces.get(id(prog))
        if got is None:
            cuts, i = [], 0
            step = max(1, SUBMIT_OPS // 4)
            while i < len(prog.ops):
                cuts.append(g.Program(ops=prog.ops[i:i + step]))
                i += step
                step = SUBMIT_OPS
            got = self.pieces[id(prog)] = cuts
        return got

    def write_uniforms(self, rt: dict) -> None:
        G = self.e.graph
        self.body().write_uniforms(rt)
        if self.head_multi:
            vh, sampler, _ = G.record_verify_head(self.nb)
            vh.write_uniforms(rt)
            sampler.write_uniforms(rt)
        else:
            G.head.write_uniforms(rt)

    async def run(self, rows: list[int], pos: int, samp: dict, logits: bool):
        """Greedy: the n argmax ids; ``logits``: the n rows' logits as bytes."""
        e, G = self.e, self.e.graph
        n = len(rows)
        t0 = time.perf_counter()
        e.gpu.write_buffer(G.ids, 0, struct.pack(f"<{n}I", *rows))
        rt = e._rt(samp, pos, n, pos)
        self.write_uniforms(rt)
        for piece in self.pieces_of(self.program(rt, n, logits)):
            e.gpu.submit(piece)
        t1 = time.perf_counter()
        self.encode_s += t1 - t0
        if logits:
            V = e.cfg.vocab_size
            raw = await e.gpu.read(self.vlog, 0, 4 * V * n)
            self.wait_s += time.perf_counter() - t1
            return [raw[4 * V * i:4 * V * (i + 1)] for i in range(n)]
        raw = await e.gpu.map_read(G.rb[self.SLOT], 0, 4 * n)
        self.wait_s += time.perf_counter() - t1
        return list(struct.unpack(f"<{n}I", raw))


async def _decode_step(e, last: int, pos: int, samp: dict, seq: list[int]) -> int:
    """One ordinary decode step: ``last`` at ``pos`` -> the next id (GPU sampler)."""
    G = e.graph
    e.gpu.write_buffer(G.ids, 0, struct.pack("<I", last))
    if samp["rep_penalty"] != 1.0:
        e.gpu.write_buffer(G.hist, 0, struct.pack(f"<{pos + 1}I", *seq[:pos + 1]))
    G.decode.run(e._rt(samp, pos, 1, pos), [g.Copy(G.ids, 0, G.rb[1], 0, 4)])
    return struct.unpack("<I", await e.gpu.map_read(G.rb[1], 0, 4))[0]


async def generate_speculative(engine, prompt_ids, max_tokens: int, k: int, mode: str,
                               draft=None, drafter=None, temperature: float = 0.0,
                               top_k: int = 0, top_p: float = 1.0,
                               repetition_penalty: float = 1.0, seed: int = 0, stop_ids=None,
                               reuse: bool = False, should_stop=None, on_chunk=None):
    """Async iterator of generated ids, as ``Engine.generate_async`` (same stats in
    ``engine.last_stats`` + "speculative"), drafting with prompt lookup (``mode`` "lookup"),
    the ``draft`` engine ("draft"), or ``drafter`` (any object with ``propose``)."""
    e = engine
    ids = [int(i) for i in prompt_ids]
    e.check_fits(len(ids), max_tokens)
    V = e.cfg.vocab_size
    if not all(0 <= i < V for i in ids):
        raise BadOption(f"prompt ids must be in [0, {V})")
    kmax = min(MAX_DRAFT_K, e.graph.chunk - 1)
    if not (isinstance(k, int) and 1 <= k <= kmax):
        raise BadOption(f"draft_k must be in [1, {kmax}], got {k!r}")
    s = Sampling(temperature, top_k, top_p, repetition_penalty, seed)
    samp = s.runtime(V)
    cpu = not (s.temperature <= 0 or s.top_k == 1) or s.repetition_penalty != 1.0
    if drafter is None:
        if mode == "lookup":
            drafter = PromptLookup()
        elif mode == "draft":
            if draft is None:
                raise BadOption("speculative 'draft' needs a draft model")
            drafter = DraftModel(draft, s)
        else:
            raise BadOption(f"speculative mode must be 'lookup' or 'draft', got {mode!r}")
    stop = e.stop_ids if stop_ids is None else frozenset(stop_ids)
    e._cancel = False
    halt = lambda: e._cancel or bool(should_stop is not None and should_stop())  # noqa: E731
    n0 = len(ids)
    cached = e.reusable_prefix(ids) if reuse else 0
    e.kv_ids = ids[:cached]
    spec = {"drafted": 0, "accepted": 0, "verify_passes": 0, "decode_steps": 0}
    stats = e.last_stats = {"prompt_tokens": n0, "cached_tokens": cached,
                            "prefill_tokens": n0 - cached, "generated": 0,
                            "dispatches_per_token": e.dispatches_per_token, "speculative": spec}
    t0 = time.perf_counter()
    done = await e.prefill_async(ids, cached, samp, should_stop, on_chunk)
    if done < n0:
        e.kv_ids = ids[:done]
        stats["stopped"] = "cancel"
        return
    first = struct.unpack("<I", await e.gpu.map_read(e.graph.rb[0], 0, 4))[0]
    t_first = time.perf_counter()
    stats["prefill_s"] = t_first - t0
    seq, kv = ids + [first], n0        # kv: positions of seq whose K/V are in the cache
    verifier = Verifier(e, verify_nb(k + 1))
    rng = random.Random(seed)
    new = [first]
    try:
        while True:
            for t in new:                  # emit this round's tokens
                if t in stop:
                    stats["stopped"] = "stop"
                    return
                if halt():
                    stats["stopped"] = "cancel"
                    return
                stats["generated"] += 1
                stats["decode_s"] = time.perf_counter() - t_first
                yield t
            left = max_tokens - stats["generated"]
            if left <= 0:
                return
            drafts, qs = await drafter.propose(seq, min(k, left - 1)) if left > 1 else ([], None)
            drafts = [int(d) for d in drafts if 0 <= int(d) < V][:min(k, left - 1)]
            if not drafts:   # nothing to verify: one decode step (its GPU sampler: p too)
                spec["decode_steps"] += 1
                new, kv = [await _decode_step(e, seq[-1], kv, samp, seq)], kv + 1
            else:
                spec["verify_passes"] += 1
                spec["drafted"] += len(drafts)
                rows = await verifier.run([seq[-1]] + drafts, kv, samp, logits=cpu)
                new = []
                for i, d in enumerate(drafts):
                    if cpu:
                        ok, t = accept_or_resample(target_dist(rows[i], s, seq + drafts[:i]), d,
                                                   qs[i] if qs else None, rng)
                    else:
                        ok, t = rows[i] == d, rows[i]
                    new.append(t)
                    if not ok:
                        break
                else:   # every draft accepted: the row after the last one gives one more
                    new.append(_draw(target_dist(rows[-1], s, seq + drafts), rng) if cpu
                               else rows[-1])
                spec["accepted"] += len(new) - 1
                kv += len(new)                 # the last token and the accepted drafts
            seq += new
            spec["acceptance_rate"] = spec["accepted"] / spec["drafted"] if spec["drafted"] \
                else 0.0
            spec["encode_s"], spec["wait_s"] = verifier.encode_s, verifier.wait_s
    finally:
        e.kv_ids = seq[:kv]
