"""The engine: load a packed model onto the GPU once, then prefill, decode and generate.

Pure Python over ``driver.gpu`` (numpy only in the native ``logits`` helper, imported lazily).
One async core (``Engine.load_async``, ``Engine.generate_async``) is shared with the browser; the
sync wrappers (``generate``, ``chat``, ``complete``, ``logits``) run it on an event loop owned by
the engine, for native use. Loading a folder or a ``synth:`` model on the wgpu-py backend is
``driver.native.load`` (this module knows no backend and no file system).

A decode step is: one uniform write, one submit (one command encoder), and a 4-byte map of the
sampled id. The id never leaves the GPU on the critical path: the sample kernel writes it where
the next step's embed reads it, so steps are submitted ``depth`` ahead and ids come back
asynchronously; the stop condition is checked when they do, and any step submitted past a stop
is discarded (it only wrote KV entries beyond the sequence).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque

from . import gpu as g
from . import prefill_attention
from .graph import RING, DecodeOptions, Graph
from .loader import ContextOverflow, ModelError, ModelSource, upload_weights, validate_manifest
from .sampler import BadOption, Sampling

DEFAULT_MAX_CONTEXT = 4096
KV_FORMATS = ("f16", "f32")
# Prefill chunk pacing: a chunk that took longer than PREFILL_SLOW_S shrinks the next ones to
# about PREFILL_TARGET_S (cancel and the browser's message loop get a turn between chunks);
# chunks far quicker than the target grow back to the graph's chunk rows.
PREFILL_TARGET_S = 0.25
PREFILL_SLOW_S = 0.5
PREFILL_MIN_ROWS = 16

__all__ = ["BadOption", "ContextOverflow", "DecodeOptions", "Engine", "ModelError"]


class Engine:
    def __init__(self, gpu: g.GPU, source: ModelSource, cfg, graph: Graph, max_ctx: int,
                 kv: str):
        self.gpu, self.source, self.cfg, self.graph = gpu, source, cfg, graph
        self.manifest = source.manifest
        self.max_context, self.kv = max_ctx, kv
        gen = self.manifest.get("generation") or {}
        self.stop_ids = frozenset(list(gen.get("eos_token_ids") or [])
                                  + list(cfg.eos_token_id or ()))
        self.bos_id = gen.get("bos_token_id", cfg.bos_token_id)
        self.last_stats: dict = {}
        # ids whose K/V sit in the cache at positions 0 .. len-1 (generate_async(reuse=True)
        # prefills only after the longest common prefix with them); anything that writes the
        # cache otherwise empties it
        self.kv_ids: list[int] = []
        self.prefill_rows = graph.chunk   # rows per paced prefill chunk now (<= graph.chunk)
        self._cancel = False
        self._loop = None
        self._tok = None
        self._template = None
        self._session = None

    # ---- loading ----
    @classmethod
    async def load_async(cls, source: ModelSource, gpu: g.GPU, *, max_context: int | None = None,
                         kv: str = "f16", chunk: int | None = None, progress=None,
                         f16_math: bool | None = None,
                         decode: DecodeOptions | None = None) -> "Engine":
        """Validate, check the GPU against the manifest's requirements (before any upload), upload
        the shards, build every buffer / pipeline / bind group / program. ``f16_math``: allow
        shader-f16 arithmetic (default: unless the model is packed f32); ``decode``: how the
        decode program is recorded (``DecodeOptions``; benchmarks)."""
        m = source.manifest
        cfg = validate_manifest(m, source.where)
        if kv not in KV_FORMATS:
            raise BadOption(f"kv must be one of {KV_FORMATS}, got {kv!r}")
        gpu.check_requirements(m.get("requirements") or {})
        limit = cfg.max_position_embeddings
        max_ctx = min(limit, DEFAULT_MAX_CONTEXT) if max_context is None else max_context
        if not (isinstance(max_ctx, int) and 1 <= max_ctx <= limit):
            raise BadOption(f"max_context must be an integer in [1, {limit}] (the model's "
                            f"max_position_embeddings), got {max_context!r}")
        chunk = min(chunk or 512, max_ctx)
        bufs = await upload_weights(gpu, source, progress)
        if f16_math is None:
            f16_math = (m.get("quant") or {}).get("scheme") != "f32"
        graph = Graph(gpu, m, cfg, bufs, max_ctx=max_ctx, kv=kv, chunk=chunk, f16_math=f16_math,
                      decode=decode)
        return cls(gpu, source, cfg, graph, max_ctx, kv)

    # ---- facts ----
    @property
    def dispatches_per_token(self) -> int:
        """Dispatches of a decode step at a short context (the first tokens of a chat);
        ``dispatches_at(ctx)`` for another."""
        return self.dispatches_at(1)

    def dispatches_at(self, ctx: int) -> int:
        """Dispatches of the decode step that attends ``ctx`` positions (the short- and
        long-context attention differ: ``DecodeOptions.short_ctx``)."""
        return self.graph.decode.dispatches({"ctx": ctx, "pos": ctx - 1, "n_tok": 1})

    def set_decode(self, opts: DecodeOptions) -> None:
        """Re-record the decode program with ``opts`` (benchmarks; between generations)."""
        self.graph.set_decode(opts)

    @property
    def weight_bytes_per_token(self) -> int:
        return self.graph.weight_bytes_per_token

    # ---- the async core ----
    def check_fits(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt < 1:
            raise BadOption("the prompt must hold at least one token")
        if not (isinstance(max_tokens, int) and max_tokens >= 0):
            raise BadOption(f"max_tokens must be an integer >= 0, got {max_tokens!r}")
        if n_prompt + max_tokens > self.max_context:
            raise ContextOverflow(
                f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}) = "
                f"{n_prompt + max_tokens} exceeds the context of {self.max_context} tokens the "
                "KV cache was sized for; shorten the prompt, lower max_tokens or load with a "
                "larger max_context")

    def _rt(self, samp: dict, pos: int, n_tok: int, step: int) -> dict:
        return {**samp, "pos": pos, "n_tok": n_tok, "ctx": pos + n_tok, "step": step,
                "n_hist": pos + n_tok, "vocab": self.cfg.vocab_size,
                **prefill_attention.split_rt(self.graph, pos, n_tok)}

    def _tail(self, samp: dict, j: int, hist_pos: int) -> list[g.Copy]:
        """Copies after step j: the sampled id to readback slot j % RING and, when a repetition
        penalty reads the history, to hist[hist_pos] (an offset that changes every step, so such
        programs are not cached: plain greedy decoding replays the same few programs)."""
        G = self.graph
        tail = [g.Copy(G.ids, 0, G.rb[j % RING], 0, 4)]
        if samp["rep_penalty"] != 1.0 and hist_pos < self.max_context:
            tail.append(g.Copy(G.ids, 0, G.hist, 4 * hist_pos, 4))
        return tail

    def _prefill_chunks(self, ids: list[int], samp: dict, start: int = 0, paced: bool = False,
                        step: int | None = None):
        """The one prefill chunk loop: writes the sequence into ``hist``, then per chunk of up to
        ``step`` (default ``graph.chunk``; ``paced``: ``prefill_rows``, read at each chunk) ids
        from ``start`` writes them into ``ids`` and yields (rt, n, last) for the caller to
        submit that chunk's programs (prefill, then the head or the all-rows LM head)."""
        G = self.graph
        step = step or G.chunk
        self.gpu.write_buffer(G.hist, 0, struct.pack(f"<{len(ids)}I", *ids))
        pos = start
        while pos < len(ids):
            n = min(self.prefill_rows if paced else step, len(ids) - pos)
            self.gpu.write_buffer(G.ids, 0, struct.pack(f"<{n}I", *ids[pos:pos + n]))
            yield self._rt(samp, pos, n, 0), n, pos + n == len(ids)
            pos += n

    def _submit_last_chunk(self, rt: dict, n: int, samp: dict, n_ids: int) -> None:
        """A prompt's last chunk: its prefill program, then its last normed row through the LM
        head; step 0's sampled id -> ids[0] and readback slot 0."""
        G, H = self.graph, self.cfg.hidden_size
        G.prefill.run(rt, [g.Copy(G.xn, 4 * H * (n - 1), G.xlast, 0, 4 * H)])
        G.head.run(rt, self._tail(samp, 0, n_ids), cache_tail=False)

    def _submit_prefill(self, ids: list[int], samp: dict, head: bool) -> None:
        """Submit the whole prompt in chunks, not waiting (bench); with ``head``, the last chunk
        also samples the first new token into ids[0] and copies it to readback slot 0."""
        self.kv_ids = []
        for rt, n, last in self._prefill_chunks(ids, samp):
            if last and head:
                self._submit_last_chunk(rt, n, samp, len(ids))
            else:
                self.graph.prefill.run(rt)

    def reusable_prefix(self, ids: list[int]) -> int:
        """Leading ids whose K/V the cache already holds: the common prefix with ``kv_ids``,
        less one where it covers every id (the last one is prefilled again so that the head has
        a row to produce the next token's logits from)."""
        kv, n = self.kv_ids, min(len(ids), len(self.kv_ids))
        i = 0
        while i < n and ids[i] == kv[i]:
            i += 1
        return min(i, len(ids) - 1)

    async def prefill_async(self, ids: list[int], start: int, samp: dict, should_stop=None,
                            on_chunk=None) -> int:
        """Prefill ids[start:] (positions start..), the last chunk through the head (step 0's
        id -> readback slot 0, not awaited). Between chunks: at most two in flight, the older
        awaited (a point where cancel, or the browser's message loop, gets in; then
        ``on_chunk(done, total)``), the chunk rows paced by the time a chunk takes
        (``prefill_rows``). Returns the end of what is prefilled: len(ids), or less when
        ``should_stop()`` / ``cancel()`` stopped it (then no head ran, nothing is in flight)."""
        G = self.graph
        slot, pos = 1, start
        flight: deque = deque()                # (slot, rows, t_submit) of non-last chunks
        t_prev_done = time.perf_counter()
        try:
            for rt, n, last in self._prefill_chunks(ids, samp, start, paced=True):
                pos += n
                if last:
                    self._submit_last_chunk(rt, n, samp, len(ids))
                    break
                G.prefill.run(rt, [g.Copy(G.ids, 0, G.rb[slot], 0, 4)])
                flight.append((slot, n, time.perf_counter()))
                slot = 1 + slot % (RING - 1)
                if len(flight) < 2:
                    continue
                s, rows, t_sub = flight.popleft()
                await self.gpu.map_read(G.rb[s], 0, 4)
                now = time.perf_counter()
                self._pace(rows, now - max(t_sub, t_prev_done))
                t_prev_done = now
                if on_chunk is not None:
                    on_chunk(pos, len(ids))
                if self._cancel or (should_stop is not None and should_stop()):
                    break
        finally:
            while flight:                      # a pending map must not meet a later submit
                s, _, _ = flight.popleft()
                await self.gpu.map_read(G.rb[s], 0, 4)
        return pos

    def _pace(self, rows: int, dt: float) -> None:
        """Rows of the next prefill chunks from one chunk of ``rows`` that took ``dt`` s."""
        cur = self.prefill_rows
        if dt > PREFILL_SLOW_S:
            want = int(rows * PREFILL_TARGET_S / dt) // PREFILL_MIN_ROWS * PREFILL_MIN_ROWS
            self.prefill_rows = max(PREFILL_MIN_ROWS, min(cur, want))
        elif dt < PREFILL_TARGET_S / 4 and rows >= cur and cur < self.graph.chunk:
            self.prefill_rows = min(self.graph.chunk, 2 * cur)

    async def generate_async(self, prompt_ids, max_tokens: int = 128, temperature: float = 0.0,
                             top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                             seed: int = 0, stop_ids=None, depth: int | None = None,
                             reuse: bool = False,
                             should_stop=None, on_chunk=None):
        """Async iterator of generated ids (the stop id itself is not yielded). ``reuse``:
        prefill only after the prefix whose K/V the cache holds (``reusable_prefix``);
        ``should_stop()`` is polled between prefill chunks and tokens, like ``cancel()``;
        ``on_chunk(done, total)`` after each awaited prefill chunk."""
        ids = [int(i) for i in prompt_ids]
        self.check_fits(len(ids), max_tokens)
        if not all(0 <= i < self.cfg.vocab_size for i in ids):
            raise BadOption(f"prompt ids must be in [0, {self.cfg.vocab_size})")
        if depth is None:   # the decode options' steps in flight
            depth = self.graph.opts.depth
        if not (isinstance(depth, int) and 1 <= depth < RING):
            raise BadOption(f"depth must be in [1, {RING - 1}], got {depth!r}")
        samp = Sampling(temperature, top_k, top_p, repetition_penalty, seed).runtime(
            self.cfg.vocab_size)
        stop = self.stop_ids if stop_ids is None else frozenset(stop_ids)
        self._cancel = False
        n0 = len(ids)
        cached = self.reusable_prefix(ids) if reuse else 0
        self.kv_ids = ids[:cached]             # beyond it the cache is about to be rewritten
        stats = self.last_stats = {"prompt_tokens": n0, "cached_tokens": cached,
                                   "prefill_tokens": n0 - cached, "generated": 0,
                                   "dispatches_per_token": self.dispatches_at(n0 + 1)}
        if max_tokens == 0:
            return
        t0 = time.perf_counter()
        done = await self.prefill_async(ids, cached, samp, should_stop, on_chunk)
        if done < n0:                          # cancelled between prefill chunks
            self.kv_ids = ids[:done]
            stats["stopped"] = "cancel"
            return
        seen: list[int] = []                   # every id read back, the stop id included
        track = {"submitted": 1}
        steps = self.decode_steps(n0, max_tokens, samp, depth, prefilled=True, track=track)
        try:
            async for j, tok in steps:
                seen.append(tok)
                if j == 0:
                    t_first = time.perf_counter()
                    stats["prefill_s"] = t_first - t0
                    # where decode's wall time goes (from here on): recording + submitting the
                    # steps, awaiting their ids, and the rest (the caller's work per token)
                    snap = (track.get("submit_s", 0.0), track.get("wait_s", 0.0))
                if tok in stop or self._cancel or (should_stop is not None and should_stop()):
                    stats["stopped"] = "stop" if tok in stop else "cancel"
                    break
                stats["generated"] = j + 1
                stats["decode_s"] = time.perf_counter() - t_first
                stats["decode_submit_s"] = track.get("submit_s", 0.0) - snap[0]
                stats["decode_wait_s"] = track.get("wait_s", 0.0) - snap[1]
                yield tok
        finally:
            await steps.aclose()  # drains the steps still in flight
            # step j >= 1 embedded the id read at step j - 1: the K/V of the first
            # submitted - 1 ids read are in the cache (the drained ones were not kept)
            self.kv_ids = ids + seen[:max(0, track["submitted"] - 1)]

    async def decode_steps(self, n0: int, n_steps: int, samp: dict, depth: int = 3,
                           prefilled: bool = True, track: dict | None = None):
        """Async iterator of (j, id) for steps j = 0 .. n_steps-1, where step j samples the token
        at position n0 + j. Step 0 is the prefill's (already submitted) when ``prefilled``; step
        j >= 1 embeds ids[0] at pos n0 + j - 1. Keeps ``depth`` steps in flight; ``track``
        ["submitted"] counts the steps submitted so far (step 0 included)."""
        G = self.graph
        if not prefilled:
            self.kv_ids = []
        pending = deque([0]) if prefilled else deque()  # without a prefill there is no step 0
        submitted = 1
        try:
            while pending or submitted < n_steps:
                while len(pending) < depth and submitted < n_steps:
                    j = submitted
                    t = time.perf_counter()
                    G.decode.run(self._rt(samp, n0 + j - 1, 1, j), self._tail(samp, j, n0 + j),
                                 cache_tail=samp["rep_penalty"] == 1.0)
                    pending.append(j)
                    submitted += 1
                    if track is not None:
                        track["submitted"] = submitted
                        track["submit_s"] = track.get("submit_s", 0.0) + time.perf_counter() - t
                j = pending.popleft()
                t = time.perf_counter()
                raw = await self.gpu.map_read(G.rb[j % RING], 0, 4)
                if track is not None:
                    track["wait_s"] = track.get("wait_s", 0.0) + time.perf_counter() - t
                yield j, struct.unpack("<I", raw)[0]
        finally:
            # drain: a readback still pending a map must not be reused by a later submit
            while pending:
                j = pending.popleft()
                await self.gpu.map_read(G.rb[j % RING], 0, 4)

    def cancel(self) -> None:
        """Stop the running generation before its next token or prefill chunk (thread-safe)."""
        self._cancel = True

    async def logits_async(self, ids, mode: str = "prefill"):
        """(n, vocab) logits of a fresh sequence as a list of bytes rows (f32)."""
        ids = [int(i) for i in ids]
        self.check_fits(len(ids), 0)
        G, V = self.graph, self.cfg.vocab_size
        samp = Sampling().runtime(V)
        rows: list[bytes] = []
        self.kv_ids = []
        if mode == "decode":  # teacher-forced decode steps through the decode program
            self.gpu.write_buffer(G.hist, 0, struct.pack(f"<{len(ids)}I", *ids))
            for pos, t in enumerate(ids):
                self.gpu.write_buffer(G.ids, 0, struct.pack("<I", t))
                G.decode.run(self._rt(samp, pos, 1, pos), [g.Copy(G.ids, 0, G.rb[0], 0, 4)])
                await self.gpu.map_read(G.rb[0], 0, 4)
                rows.append(await self.gpu.read(G.logits, 0, 4 * V))
            return rows
        if mode != "prefill":
            raise BadOption(f"mode must be 'prefill' or 'decode', got {mode!r}")
        G.record_lm_all()   # its output buffers hold lm_rows <= chunk rows (binding limit)
        for rt, n, _ in self._prefill_chunks(ids, samp, step=G.lm_rows):
            G.prefill.run(rt)
            G.lm_all.run(rt)
            blocks = [await self.gpu.read(buf, 0, 4 * n * rb) for _, rb, buf in G.lm_blocks]
            for t in range(n):
                rows.append(b"".join(b[4 * rb * t:4 * rb * (t + 1)]
                                     for b, (_, rb, _) in zip(blocks, G.lm_blocks)))
        return rows

    # ---- sync wrappers (native) ----
    def adopt_loop(self, loop) -> None:
        """Run the sync wrappers on ``loop`` (the one the engine was loaded on; closed by close)."""
        self._loop = loop

    def _run(self, coro):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def logits(self, ids, mode: str = "prefill"):
        """float32 numpy array (len(ids), vocab) for a fresh sequence (native helper)."""
        import numpy as np
        rows = self._run(self.logits_async(ids, mode))
        return np.frombuffer(b"".join(rows), "<f4").reshape(len(rows), self.cfg.vocab_size)

    def generate(self, prompt_ids, max_tokens: int = 128, **kw):
        """Sync iterator of generated ids; closing it (or ``cancel()``) stops between tokens."""
        agen = self.generate_async(prompt_ids, max_tokens, **kw)
        try:
            while True:
                try:
                    tok = self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield tok
        finally:
            self._run(agen.aclose())

    # ---- text ----
    def tokenizer(self):
        if self._tok is None:
            from .tokenizer import Tokenizer
            path = self.source.tokenizer_path("tokenizer.json")
            if not path.is_file():
                raise ModelError(f"{path}: the model has no tokenizer.json; re-pack it with one")
            self._tok = Tokenizer.from_file(path)
        return self._tok

    def chat_template(self):
        if self._template is None:
            from .chat import ChatTemplate
            self._template = ChatTemplate.from_tokenizer_config(
                self.source.tokenizer_path("tokenizer_config.json"))
        return self._template

    def chat_ids(self, messages) -> list[int]:
        """Prompt ids of ``messages`` through the model's chat template (as transformers'
        ``apply_chat_template(..., add_generation_prompt=True)``)."""
        return self.chat_template().encode(self.tokenizer(), messages, add_generation_prompt=True)

    def session(self):
        """The engine's default ``driver.session.ChatSession`` (the one request path)."""
        if self._session is None:
            from .session import ChatSession
            self._session = ChatSession(self)
        return self._session

    def chat(self, messages, **options):
        """Sync iterator of text pieces of the assistant's reply to ``messages``; ``options`` as
        a request's (defaults: the manifest's ``generation`` section; driver.session)."""
        return self.session().chat(messages, **options)

    def complete(self, text: str, **options):
        """Sync iterator of text pieces continuing ``text`` (BOS added as the tokenizer does)."""
        for _, piece in self.session().stream({"prompt": text, "options": options}):
            if piece:
                yield piece

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
