"""The Llama-3 forward pass as recorded GPU programs: buffers, kernels and dispatch order.

Pure Python (runs in Pyodide). ``Graph`` allocates every activation, the KV cache and the small
state buffers once, and records four programs over them (see ``driver.plan.Recorder``):

  prefill   one chunk of up to ``chunk`` tokens at position ``pos``: embed, per layer
            matmul(wq, wk, wv) -> rope_append -> attention_prefill -> matmul(wo) -> add_rmsnorm
            -> gate_up -> matmul(w2) -> add_rmsnorm; the last norm leaves the final-normed rows
            in ``xn``
  head      the last row of ``xn`` -> LM head (matvec per row block) -> sample -> ``ids[0]``
  decode    one token: the same chain with qkv_rope_decode (1-3 dispatches, see ``qkv_heads``)
            / matvec / attention_decode, then head, all in ONE
            program; the sampled id stays in ``ids[0]`` for the next step's embed. Recorded
            with its short- and long-context attention (``DecodeOptions``): each step replays
            the steps its ``ctx`` selects (``plan.Span``)
  lm_all    (tests: logits of every position) matmul of all ``xn`` rows per LM-head row block
  verify<n> (speculative decoding, on first use) the prefill body for <= n rows with the small-M
            projection kernels (matvec_multi, gate_up_multi) and decode's attention per row
            (attention_decode's verify variant, VERIFY_ATTN_ROWS) in f32 arithmetic
  vhead<n>  (speculative, VERIFY_HEAD_MULTI) the LM head over <= n rows as one matvec_multi per
            row block, and ``sampler`` (sample + sample_select of ``logits``)

Dims: H hidden, Q = n_heads*head_dim, KV = n_kv_heads*head_dim, F intermediate, V vocab,
T prefill chunk rows, C max context.
"""

from __future__ import annotations

from modelfmt.manifest import resolve

from . import decode_xq
from . import gpu as g
from . import prefill_attention
from .loader import DeviceCannotRun, ModelError
from .decode_options import KNOB_OPS, MAX_DEPTH, DecodeOptions  # noqa: F401  (re-exported)
from .plan import Dyn, PipelineCache, Recorder, Span

# Every op this graph dispatches (``Graph.kernel`` refuses any other): the storage-buffer requirement
# of a manifest (modelfmt.manifest.MIN_STORAGE_BUFFERS) is computed from this declaration.
OPS = ("embed", "rmsnorm", "add_rmsnorm", "matmul", "matvec", "gate_up", "rope_append",
       "qkv_rope_decode", "attention_prefill", "attention_decode", "attention_combine", "sample",
       "sample_select", "matvec_multi", "gate_up_multi", "quant_x", "attention_prefill_combine")
# Verify bodies: x of the q4_0 projections quantized to int8 once per pass by quant_x (4 dispatches
# a layer) instead of by every workgroup of matvec_multi / gate_up_multi (same int8 values, so the
# same dots); where quant_x fits (q4_0, packed int8 dot products). On: measured on an H200
# (2026-12-03, ``python -m driver bench synth:llama3-8b-shape:q4_0 --speculative --profile``), a
# 5-row pass of the 8B shape on the nb = 8 body 20.3 ms -> 12.7 ms (the per-workgroup quantization
# of x was what made the small-M kernels' cost grow with the rows).
VERIFY_XQ = True
# Verify bodies of up to this many rows run decode's attention per row (attention_decode /
# attention_combine with nb: split-K over the cache, or the one-pass kernel up to
# DecodeOptions.short_ctx, as decode picks) instead of attention_prefill, whose grid is one
# workgroup per query head for a few rows (H200, 8B shape, 5 rows at ctx 256: 109 us a layer where
# decode's split-K pair takes 18 us for one row).
VERIFY_ATTN_ROWS = 16
RING = MAX_DEPTH + 1   # readback buffers for sampled ids (pipelined steps in flight <= RING - 1)
SLOTS = 8192      # uniform slices available to all recorders together (2 MiB): the 8B shape's
                  # prefill + decode + head take 1,280, each verify body 576 (5 nb values: 2,880)


class Graph:
    def __init__(self, gpu: g.GPU, manifest: dict, cfg, shard_bufs: list, *, max_ctx: int,
                 kv: str, chunk: int, f16_math: bool = True,
                 decode: DecodeOptions | None = None):
        import shaders  # pure Python; imported here so that ``import driver`` stays light

        self.shaders = shaders
        self.gpu, self.m, self.cfg = gpu, manifest, cfg
        self.shard_bufs, self.max_ctx, self.kv, self.chunk = shard_bufs, max_ctx, kv, chunk
        # f16 arithmetic (shader-f16 matmul tiles) only where the adapter has it and it is wanted:
        # an f32 model keeps f32 math end to end (its logits are compared at 1e-3).
        from dataclasses import replace
        self.caps = replace(gpu.caps, shader_f16=gpu.caps.shader_f16 and f16_math)
        self.pipes = PipelineCache(gpu)
        self.ubuf = gpu.create_buffer(SLOTS * g.UNIFORM_STRIDE, g.UNIFORM, "params")
        self._next_slot = 0
        self.opts = decode or DecodeOptions()
        self.part = self.part_bytes = None    # split-K attention partials (made by _attention_decode)
        self.prefill_part = self.prefill_split_tk = None   # prefill_attention's split partials
        self.cand = self.cand_bytes = None    # sampling candidates (made by _record_head)
        self.lm_all, self.lm_blocks = None, []  # logits of every prefill row (record_lm_all)
        self.verifiers: dict[int, Recorder] = {}  # verify bodies by max rows (record_verify)
        self.vheads: dict[int, tuple] = {}        # verify LM heads by max rows (record_verify_head)
        self.sampler: Recorder | None = None      # sampling alone (record_verify_head)
        self.xq = None                            # quant_x output of verify bodies (VERIFY_XQ)
        self.dxq = None                           # quant_x output of decode (DecodeOptions.xq)
        self.lm_rows = self.chunk               # rows per lm_all pass (record_lm_all sets it)
        self._alloc()
        self.prefill = self._recorder("prefill", 64 + 16 * cfg.num_hidden_layers)
        self._record_body(self.prefill)
        self.head = self._recorder("head", 64)
        self._record_head(self.head, src_row=None)
        self.weight_bytes_per_token = self._weight_bytes()
        self._decode_slots = (self._next_slot, 128 + 16 * cfg.num_hidden_layers)
        self.decode = self._recorder("decode", self._decode_slots[1])
        self._record_decode_body(self.decode)
        self._record_head(self.decode, src_row=0)

    def set_decode(self, opts: DecodeOptions) -> None:
        """Re-record the decode program with ``opts`` in the same uniform slices (benchmarks:
        candidates on one loaded model). The previous program is dropped."""
        old = self.opts
        self.opts = opts
        try:
            r = Recorder(self.gpu, self.pipes, self.ubuf, *self._decode_slots, "decode")
            self._record_decode_body(r)
            self._record_head(r, src_row=0)
        except BaseException:
            self.opts = old
            raise
        self.decode = r

    def _weight_bytes(self) -> int:
        """Weight bytes a decode step reads: every layer matrix, the LM head, an embedding row."""
        names = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
        n = sum(self.nbytes(f"layers.{i}.{nm}") for i in range(self.cfg.num_hidden_layers)
                for nm in names)
        row = self.nbytes("tok_embeddings") // max(1, self.cfg.vocab_size)
        return n + self.nbytes("output") + row

    # ---- allocation ----
    def _buf(self, nbytes: int, label: str, kind: str = g.STORAGE):
        return self.gpu.create_buffer(max(16, nbytes), kind, label)

    def _alloc(self) -> None:
        c, T, C = self.cfg, self.chunk, self.max_ctx
        H, Q, KV, F, V = c.hidden_size, c.q_dim, c.kv_dim, c.intermediate_size, c.vocab_size
        self.dims = dict(H=H, Q=Q, KV=KV, F=F, V=V)
        self.ids = self._buf(4 * T, "ids")            # (T,) u32: chunk ids; ids[0] = sampled id
        self.hist = self._buf(4 * C, "hist")          # (C,) u32: every id of the sequence
        self.x = self._buf(4 * T * H, "x")            # (T, H) f32 residual stream
        self.xn = self._buf(4 * T * H, "xn")          # (T, H) f32 normed input of a sublayer
        self.q = self._buf(4 * T * Q, "q")            # (T, Q) f32 roped queries
        self.k_new = self._buf(4 * T * KV, "k_new")   # (T, KV) f32 prefill keys before RoPE
        self.v_new = self._buf(4 * T * KV, "v_new")   # (T, KV) f32 prefill values
        self.attn = self._buf(4 * T * Q, "attn")      # (T, Q) f32 attention output
        self.delta = self._buf(4 * T * H, "delta")    # (T, H) f32 sublayer output
        self.act = self._buf(4 * T * F, "act")        # (T, F) f32 silu(gate) * up
        self.xlast = self._buf(4 * H, "xlast")        # (H,) f32 final-normed last row
        self.logits = self._buf(4 * V, "logits")      # (V,) f32
        inv = c.rope_inv_freq()
        self.inv_freq = self._buf(4 * len(inv), "inv_freq")  # (head_dim/2,) f32
        import struct
        self.gpu.write_buffer(self.inv_freq, 0, struct.pack(f"<{len(inv)}f", *inv))
        kv_bytes = C * KV * (2 if self.kv == "f16" else 4)
        kv_bytes = (kv_bytes + 3) // 4 * 4
        self.k_cache = [self._buf(kv_bytes, f"k{i}") for i in range(c.num_hidden_layers)]
        self.v_cache = [self._buf(kv_bytes, f"v{i}") for i in range(c.num_hidden_layers)]
        self.kv_bytes = kv_bytes                      # per layer and per K/V: (C, n_kv, hd)
        self.rb = [self._buf(256, f"rb{i}", g.READBACK) for i in range(RING)]

    def _recorder(self, name: str, slots: int) -> Recorder:
        r = Recorder(self.gpu, self.pipes, self.ubuf, self._next_slot, slots, name)
        self._next_slot += slots
        if self._next_slot > SLOTS:
            raise ModelError(f"model needs more than {SLOTS} uniform slices")
        return r

    # ---- helpers ----
    def _fits(self, op: str, **dims) -> bool:
        if op not in OPS:
            raise ValueError(f"op {op!r} is not declared in driver.graph.OPS")
        return self.shaders.fits(op, self.caps, **dims)

    def kernel(self, op: str, **dims):
        if op not in OPS:
            raise ValueError(f"op {op!r} is not declared in driver.graph.OPS")
        try:
            return self.shaders.kernel(op, self.caps, **dims)
        except self.shaders.UnsupportedKernel as e:   # e.g. a storage-buffer limit below 6
            raise DeviceCannotRun(f"this GPU cannot run the model: {e}") from None

    def qkv_heads(self, fmt: str, heads: str = "qkv") -> list[str]:
        """qkv_rope_decode's ``heads`` per dispatch on this device: ["qkv"] (fused) when it fits
        maxStorageBuffersPerShaderStage, else ["q", "kv"] or ["q", "k", "v"] (restricted to
        ``heads``)."""
        try:
            return self.shaders.qkv_split(self.caps, fmt, heads)
        except self.shaders.UnsupportedKernel as e:
            raise DeviceCannotRun(f"this GPU cannot run the model: {e}") from None

    def qkv_groups(self, p: str) -> list[tuple[str, dict]]:
        """(heads, weight dims) of each decode QKV dispatch of layer prefix ``p``: one group per
        weight format in q, k, v order (a Q4_K_M file keeps some attn_v at Q6_K beside Q4_K
        attn_q / attn_k), each split as ``qkv_heads`` says."""
        wds = {h: self.wdims(p + "attention.w" + h) for h in "qkv"}
        groups: list[tuple[str, dict]] = []
        for h in "qkv":
            same = [i for i, (_, wd) in enumerate(groups) if wd == wds[h]]
            if same:
                groups[same[0]] = (groups[same[0]][0] + h, wds[h])
            else:
                groups.append((h, wds[h]))
        return [(s, wd) for g, wd in groups for s in self.qkv_heads(wd["fmt"], g)]

    def gate_up_dims(self, p: str) -> dict:
        """The weight dims of gate_up, which reads w1 and w3 in one format."""
        wd = self.wdims(p + "feed_forward.w1")
        if self.wdims(p + "feed_forward.w3") != wd:
            raise ModelError(f"{p}feed_forward.w1 and .w3 have different formats "
                             f"({wd['fmt']}, {self.wdims(p + 'feed_forward.w3')['fmt']}); the "
                             "fused gate_up kernel reads both in one: re-pack the model with one "
                             "--quant for both")
        return wd

    def tensor(self, name: str) -> dict:
        return resolve(self.m, name)

    def single_block(self, name: str) -> dict:
        t = self.tensor(name)
        if len(t["blocks"]) != 1:
            raise ModelError(f"tensor {name!r} is split in {len(t['blocks'])} row blocks; only the "
                             "embedding / LM head may be (re-pack with a larger part size)")
        return t["blocks"][0]

    def parts(self, block: dict, prefix: str = "w") -> dict:
        """Binding entries ``{prefix}_{part}`` -> (shard buffer, offset, nbytes)."""
        return {f"{prefix}_{pn}": (self.shard_bufs[p["shard"]], p["offset"], p["nbytes"])
                for pn, p in block["parts"].items()}

    def wdims(self, name: str) -> dict:
        t = self.tensor(name)
        return {"fmt": t["dtype"], "group_size": t.get("group_size", 32)}

    def nbytes(self, name: str) -> int:
        return sum(p["nbytes"] for b in self.tensor(name)["blocks"] for p in b["parts"].values())

    def norm_buf(self, name: str):
        b = self.single_block(name)["parts"]["data"]
        return (self.shard_bufs[b["shard"]], b["offset"], b["nbytes"])

    @staticmethod
    def fill(kernel, **avail) -> dict | None:
        """The kernel's params, each field taken from ``avail`` (values or Dyn)."""
        if kernel.params is None:
            return None
        missing = [f for f, _ in kernel.params.fields if f not in avail]
        if missing:
            raise ModelError(f"kernel {kernel.slug} wants params {missing} the driver does not "
                             "know how to set")
        return {f: avail[f] for f, _ in kernel.params.fields}

    @staticmethod
    def whole(buf, nbytes: int):
        return (buf, 0, nbytes)

    # ---- recording ----
    def _record_body(self, r: Recorder, nb: int = 0) -> None:
        """Prefill: one chunk of ``n_tok`` rows at position ``pos`` (see the module docstring);
        ``nb`` > 0: at most ``nb`` rows, the projections by the small-M kernels (record_verify)."""
        c, d = self.cfg, self.dims
        H, Q, KV, F = d["H"], d["Q"], d["KV"], d["F"]
        rows, n_tok, pos = self.chunk, Dyn("n_tok"), Dyn("pos")
        W = self.whole
        xq = decode_xq.verify_plan(self, nb, VERIFY_XQ)
        x, xn = W(self.x, 4 * rows * H), W(self.xn, 4 * rows * H)
        q, attn = W(self.q, 4 * rows * Q), W(self.attn, 4 * rows * Q)
        delta, act = W(self.delta, 4 * rows * H), W(self.act, 4 * rows * F)
        kn, vn = W(self.k_new, 4 * rows * KV), W(self.v_new, 4 * rows * KV)
        rt_grid = {"n_tok": n_tok}
        # embedding gather, one dispatch per row block of the table
        for blk in self.tensor("tok_embeddings")["blocks"]:
            k = self.kernel("embed", hidden=H, **self.wdims("tok_embeddings"))
            r.dispatch(k, {"ids": W(self.ids, 4 * rows), **self.parts(blk), "x": x},
                       {"n_tok": n_tok, "row_start": blk["row_start"], "rows": blk["rows"]},
                       rt_grid)
        k = self.kernel("rmsnorm", hidden=H, eps=c.rms_norm_eps)
        r.dispatch(k, {"x": x, "w": self.norm_buf("layers.0.attention_norm"), "out": xn},
                   {"n_tok": n_tok}, rt_grid)
        for i in range(c.num_hidden_layers):
            p = f"layers.{i}."
            kc = W(self.k_cache[i], self.kv_bytes)
            vc = W(self.v_cache[i], self.kv_bytes)
            # q, k, v as three tiled matmuls, then RoPE + the KV append in one elementwise
            # pass: a fused token-blocked QKV kernel re-read its weights per 4 tokens (63 % of
            # an 8B prefill, docs/PERFORMANCE.md)
            pre = dict(decode=False, n_tok=n_tok, nb=nb)
            xqn = xq(r, xn, H, *(p + f"attention.w{t}" for t in "qkv"))
            self._proj(r, p + "attention.wq", xn, q, rows=Q, cols=H, xq=xqn, **pre)
            self._proj(r, p + "attention.wk", xn, kn, rows=KV, cols=H, xq=xqn, **pre)
            self._proj(r, p + "attention.wv", xn, vn, rows=KV, cols=H, xq=xqn, **pre)
            k = self.kernel("rope_append", n_heads=c.num_attention_heads,
                            n_kv_heads=c.num_key_value_heads, head_dim=c.head_dim, kv=self.kv)
            r.dispatch(k, {"q": q, "k_new": kn, "v_new": vn,
                           "inv_freq": W(self.inv_freq, 2 * c.head_dim),
                           "k_cache": kc, "v_cache": vc}, {"n_tok": n_tok, "pos": pos}, rt_grid)
            if 0 < nb <= VERIFY_ATTN_ROWS:
                self._attention_decode(r, q, kc, vc, attn, nb=nb)
            else:   # one pass, or split over the positions after a long cached prefix
                prefill_attention.record(self, r, q, kc, vc, attn, n_tok, pos, dict(
                    n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads,
                    head_dim=c.head_dim, kv=self.kv))
            self._proj(r, p + "attention.wo", attn, delta, rows=H, cols=Q,
                       xq=xq(r, attn, Q, p + "attention.wo"), **pre)
            k = self.kernel("add_rmsnorm", hidden=H, eps=c.rms_norm_eps)
            r.dispatch(k, {"x": x, "delta": delta, "w": self.norm_buf(p + "ffn_norm"),
                           "out": xn}, {"n_tok": n_tok}, rt_grid)
            # SwiGLU: act = silu(xn W1^T) * (xn W3^T), then delta = act W2^T
            wd = self.gate_up_dims(p)
            xqg = xq(r, xn, H, p + "feed_forward.w1")
            k = (self.kernel("gate_up_multi", ffn=F, hidden=H, nb=nb, **wd,
                             **({"xq": 1} if xqg else {})) if nb else
                 self.kernel("gate_up", ffn=F, hidden=H, decode=0, **wd))
            r.dispatch(k, {("xq" if xqg else "x"): xqg or xn,
                           **self.parts(self.single_block(p + "feed_forward.w1"), "w1"),
                           **self.parts(self.single_block(p + "feed_forward.w3"), "w3"),
                           "act": act}, self.fill(k, n_tok=n_tok), rt_grid)
            self._proj(r, p + "feed_forward.w2", act, delta, rows=H, cols=F, xq=xq(r, act, F, p + "feed_forward.w2"),
                       **pre)
            nxt = f"layers.{i + 1}.attention_norm" if i + 1 < c.num_hidden_layers else "norm"
            k = self.kernel("add_rmsnorm", hidden=H, eps=c.rms_norm_eps)
            r.dispatch(k, {"x": x, "delta": delta, "w": self.norm_buf(nxt), "out": xn},
                       {"n_tok": n_tok}, rt_grid)

    def _record_decode_body(self, r: Recorder) -> None:
        """One token, residual stream kept un-normed in ``x``: the RMSNorms are fused into the
        kernels that read them (qkv_rope_decode, gate_up: ``norm_eps``) and the wo / w2
        matvecs add into ``x`` (accumulate=1), so a layer is 6 dispatches, not 8: two
        dependent dispatches fewer per layer (~5-8 us each on an H200). Where a fused kernel
        would bind more storage buffers than the device allows, that norm is its own
        ``rmsnorm`` dispatch into ``xn`` instead (``_normed``)."""
        c, d = self.cfg, self.dims
        H, Q, F = d["H"], d["Q"], d["F"]
        W = self.whole
        x, q, attn, act = W(self.x, 4 * H), W(self.q, 4 * Q), W(self.attn, 4 * Q), W(self.act, 4 * F)
        emb = self.tensor("tok_embeddings")
        for blk in emb["blocks"]:   # embedding gather, one dispatch per row block of the table
            k = self.kernel("embed", hidden=H, **self.wdims("tok_embeddings"))
            r.dispatch(k, {"ids": W(self.ids, 4), **self.parts(blk), "x": x},
                       {"n_tok": 1, "row_start": blk["row_start"], "rows": blk["rows"]},
                       {"n_tok": 1})
        for i in range(c.num_hidden_layers):
            p = f"layers.{i}."
            kc = W(self.k_cache[i], self.kv_bytes)
            vc = W(self.v_cache[i], self.kv_bytes)
            dec = dict(decode=True, n_tok=1, accumulate=1)   # wo / w2 add into the residual x
            self._qkv_decode(r, p, q, kc, vc)
            self._attention_decode(r, q, kc, vc, attn)
            self._proj(r, p + "attention.wo", attn, x, rows=H, cols=Q, **dec)
            wd = self.gate_up_dims(p)
            wts = {**self.parts(self.single_block(p + "feed_forward.w1"), "w1"),
                   **self.parts(self.single_block(p + "feed_forward.w3"), "w3"), "act": act}
            self._normed(r, p + "ffn_norm", [("gate_up", dict(ffn=F, hidden=H, decode=1, **wd,
                                                              **self.opts.knob("gate_up")))],
                         wts, {"n_tok": 1}, {})
            self._proj(r, p + "feed_forward.w2", act, x, rows=H, cols=F, **dec)
        # the final RMSNorm is the LM head's (_record_head: fused into it or its own dispatch)

    def _normed(self, r, norm: str, kernels: list, bufs: dict, params: dict, grid: dict) -> None:
        """Dispatch the kernels ``(op, dims)`` of ``kernels`` in order on RMSNorm(x) with weight
        ``norm``: all fused (``norm_eps``: x and norm_w bound) when every one fits the device
        (``shaders.fits``), else one ``rmsnorm`` dispatch into ``xn`` and the plain kernels on
        ``xn``."""
        H, W, eps = self.dims["H"], self.whole, self.cfg.rms_norm_eps
        fused = [(op, {**dims, "norm_eps": eps}) for op, dims in kernels]
        if all(self._fits(op, **dims) for op, dims in fused):
            kernels = fused
            avail = {**bufs, "x": W(self.x, 4 * H), "norm_w": self.norm_buf(norm)}
        else:   # a fused kernel over maxStorageBuffersPerShaderStage
            k = self.kernel("rmsnorm", hidden=H, eps=eps)
            r.dispatch(k, {"x": W(self.x, 4 * H), "w": self.norm_buf(norm),
                           "out": W(self.xn, 4 * H)}, {"n_tok": 1}, {"n_tok": 1})
            avail = {**bufs, "x": W(self.xn, 4 * H)}
        # the int8-x kernels on x quantized once (the norm weight applied there when fused)
        pays = decode_xq.pays(self, sum(decode_xq.weights(op, dims) for op, dims in kernels))
        use = [pays and decode_xq.reads(self, op, dims) for op, dims in kernels]
        if any(use):
            avail["xq"] = decode_xq.record(self, r, avail["x"], H, avail.get("norm_w"))
        ks = [self.kernel(op, **dims, **({"xq": 1} if u else {}))
              for (op, dims), u in zip(kernels, use)]
        for k in ks:
            r.dispatch(k, {b.name: avail[b.name] for b in k.bindings if b.kind != "uniform"},
                       self.fill(k, **params), grid)

    def _qkv_decode(self, r, p, q, kc, vc) -> None:
        """Decode: the fused M = 1 kernel in one dispatch, or 2-3 where it binds more storage
        buffers than the device allows (qkv_split; q4_1 needs 14, WebGPU's default is 8) or wq /
        wk / wv differ in format (``qkv_groups``), with the attention RMSNorm fused into each
        where all of them fit."""
        c = self.cfg
        avail = {"inv_freq": self.whole(self.inv_freq, 2 * c.head_dim), "q": q,
                 "k_cache": kc, "v_cache": vc}
        for nm in ("wq", "wk", "wv"):
            avail.update(self.parts(self.single_block(p + "attention." + nm), nm))
        dims = dict(hidden=c.hidden_size, n_heads=c.num_attention_heads,
                    n_kv_heads=c.num_key_value_heads, head_dim=c.head_dim, kv=self.kv,
                    **self.opts.knob("qkv_rope_decode"))
        kernels = [("qkv_rope_decode", {**dims, **wd, "heads": h}) for h, wd in self.qkv_groups(p)]
        self._normed(r, p + "attention_norm", kernels, avail, {"n_tok": 1, "pos": Dyn("pos")},
                     {"n_tok": 1})

    def _proj(self, r, name, src, dst, *, decode: bool, n_tok, rows: int, cols: int,
              accumulate: int = 0, nb: int = 0, xq=None) -> None:
        """dst (n_tok, rows) (+)= src (n_tok, cols) W^T: matvec in decode, matmul in prefill,
        matvec_multi in a verify pass (``nb`` > 0 rows at most: each weight read once; ``xq``:
        quant_x's int8 chunks of ``src``, used by a q4_0 weight)."""
        if nb:
            wd = self.wdims(name)
            use = xq is not None and wd["fmt"] == "q4_0"
            k = self.kernel("matvec_multi", rows=rows, cols=cols, nb=nb, **wd,
                            **({"xq": 1} if use else {}))
            r.dispatch(k, {("xq" if use else "x"): xq if use else src,
                           **self.parts(self.single_block(name)), "y": dst},
                       self.fill(k, n_tok=n_tok), {})
            return
        op = "matvec" if decode else "matmul"
        # prefill: 8 tokens a thread (128-token tiles) where that still gives >= 256 workgroups
        # for a full chunk; H200, M = 512: +10-20 % on 4096- and 14336-row weights, -32 % on
        # 1024 rows (too few workgroups) (docs/PERFORMANCE.md)
        knobs = {"mt": 8} if not decode and rows * self.chunk >= 256 * 64 * 128 else {}
        if decode:
            knobs = self.opts.knob("matvec")
        dims = dict(rows=rows, cols=cols, accumulate=accumulate, **knobs, **self.wdims(name))
        xin = {"x": src}
        if decode and decode_xq.pays(self, rows * cols) and decode_xq.reads(self, op, dims):
            xin, dims = {"xq": decode_xq.record(self, r, src, cols)}, {**dims, "xq": 1}
        k = self.kernel(op, **dims)
        params = self.fill(k, n_tok=n_tok, row_offset=0)
        r.dispatch(k, {**xin, **self.parts(self.single_block(name)), "y": dst}, params,
                   {"n_tok": n_tok})

    def _short_attention(self, dims: dict):
        """The one-pass attention kernel of ``DecodeOptions.short_ctx`` (its ``short_wg`` tile,
        else the default tile where that does not fit the device), or None."""
        if not self.opts.short_ctx:
            return None
        for wg in dict.fromkeys((self.opts.short_wg, 0)):
            if self._fits("attention_decode", **dims, direct=1, wg=wg):
                return self.kernel("attention_decode", **dims, direct=1, wg=wg)
        return None

    def _attention_decode(self, r, q, kc, vc, out, nb: int = 0) -> None:
        """ctx <= short_ctx: attention_decode direct=1, one dispatch writing ``out``. Longer:
        split-K flash-decoding, attention_decode writes per-chunk partials into ``part``,
        attention_combine merges them into ``out``; both grids follow ``ctx``. Both paths are
        recorded; ``plan.Span`` picks per step. ``nb`` > 0 (a verify body): the kernels' verify
        variant over the pass's n_tok rows, each row decode's arithmetic at its own context (the
        pass's ctx picks the path: rows of a pass straddling short_ctx that decode would run in
        one pass get the split-K pair, equal to it to rounding)."""
        c = self.cfg
        dims = dict(n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads,
                    head_dim=c.head_dim, kv=self.kv, **({"nb": nb} if nb else {}))
        ctx = Dyn("ctx")
        prm = {"ctx": ctx, "n_tok": Dyn("n_tok")} if nb else {"ctx": ctx}
        short = self._short_attention(dims)
        when_long = None
        if short is not None:
            r.dispatch(short, {"q": q, "k_cache": kc, "v_cache": vc, "out": out}, prm,
                       prm, when=Span("ctx", 0, self.opts.short_ctx))
            if self.opts.short_ctx >= self.max_ctx:
                return   # the KV cache never holds more: no split-K pair
            when_long = Span("ctx", self.opts.short_ctx + 1)
        knobs = self.opts.knob("attention_decode")
        k1 = self.kernel("attention_decode", **dims, **knobs)
        k2 = self.kernel("attention_combine", **dims, **knobs)
        if self.part is None or self.part_bytes < k1.meta["part_bytes"]:
            self.part_bytes = k1.meta["part_bytes"]
            self.part = self._buf(self.part_bytes, "attn_part")  # split-K partials, reused
        part = (self.part, 0, self.part_bytes)
        r.dispatch(k1, {"q": q, "k_cache": kc, "v_cache": vc, "part": part}, prm, prm,
                   when=when_long)
        r.dispatch(k2, {"part": part, "out": out}, prm, prm, when=when_long)

    def _record_head(self, r: Recorder, src_row) -> None:
        """LM head over row blocks -> logits (V,), then sample -> ids[0] and hist[pos+1].

        ``src_row`` None: prefill (the engine copies the chunk's last ``xn`` row to ``xlast``
        in the program tail first: already normed); 0: decode, on the residual ``x``: the final
        RMSNorm fused into every block's matvec (``DecodeOptions.head_norm``, where they fit the
        device), else one ``rmsnorm`` dispatch into ``xlast`` first."""
        d = self.dims
        H, V, W = d["H"], d["V"], self.whole
        blocks = self.tensor("output")["blocks"]
        dims = [dict(rows=blk["rows"], cols=H, accumulate=0, **self.wdims("output"))
                for blk in blocks]
        src = {"x": W(self.xlast, 4 * H)}
        if src_row is not None:
            knobs = self.opts.knob("head")
            dims = [{**dm, **knobs} for dm in dims]
            eps = self.cfg.rms_norm_eps
            fused = [{**dm, "norm_eps": eps} for dm in dims]
            if self.opts.head_norm and all(self._fits("matvec", **dm) for dm in fused):
                dims, src = fused, {"x": W(self.x, 4 * H), "norm_w": self.norm_buf("norm")}
            else:
                k = self.kernel("rmsnorm", hidden=H, eps=eps)
                r.dispatch(k, {"x": W(self.x, 4 * H), "w": self.norm_buf("norm"),
                               "out": W(self.xlast, 4 * H)}, {"n_tok": 1}, {"n_tok": 1})
            if decode_xq.pays(self, V * H) and all(decode_xq.reads(self, "matvec", dm)
                                                    for dm in dims):   # x quantized once
                src = {"xq": decode_xq.record(self, r, src["x"], H, src.get("norm_w"))}
                dims = [{**dm, "xq": 1} for dm in dims]
        for blk, dm in zip(blocks, dims):
            k = self.kernel("matvec", **dm)
            params = self.fill(k, row_offset=blk["row_start"], n_tok=1)
            r.dispatch(k, {**src, **self.parts(blk), "y": W(self.logits, 4 * V)}, params, {})
        self._record_sample(r)

    def _record_sample(self, r: Recorder) -> None:
        """Sampling of ``logits``: per-chunk candidates, then the pick -> ids[0] (read by the
        next embed)."""
        V = self.dims["V"]
        k1 = self.kernel("sample", vocab=V)
        k2 = self.kernel("sample_select", vocab=V)
        if self.cand is None:
            self.cand_bytes = k1.meta["cand_bytes"]
            self.cand = self._buf(self.cand_bytes, "sample_cand")  # (n_chunks, KMAX) key/id
        cand = (self.cand, 0, self.cand_bytes)
        r.dispatch(k1, {"logits": self.whole(self.logits, 4 * V),
                        "history": self.whole(self.hist, 4 * self.max_ctx), "cand": cand},
                   {f: Dyn(f) for f, _ in k1.params.fields}, {})
        r.dispatch(k2, {"cand": cand, "out": self.whole(self.ids, 4)},
                   {f: Dyn(f) for f, _ in k2.params.fields}, {})

    def record_verify(self, nb: int) -> Recorder:
        """The prefill body for at most ``nb`` rows (driver.speculative's verify pass over k + 1
        tokens) with the small-M kernels matvec_multi / gate_up_multi for the projections:
        every weight read once, each row's dots computed as the decode kernels compute them
        (the tiled matmuls cost a whole 64- or 128-token tile at any n_tok: ~20x a decode step
        for 5 rows of the 8B shape), and f32 arithmetic in the other ops, nearer decode's."""
        rec = self.verifiers.get(nb)
        if rec is None:
            from dataclasses import replace
            caps, self.caps = self.caps, replace(self.caps, shader_f16=False)
            try:
                rec = self._recorder(f"verify{nb}", 64 + 16 * self.cfg.num_hidden_layers)
                self._record_body(rec, nb=nb)
            finally:
                self.caps = caps
            self.verifiers[nb] = rec
        return rec

    def record_verify_head(self, nb: int) -> tuple[Recorder, Recorder, list]:
        """The verify pass's LM head as ONE small-M pass over its ``nb`` final-normed rows (each
        head weight byte read once, not once per row): (head recorder: matvec_multi per row block
        of the LM head into ``(nb, rows_b)`` buffers; sampler recorder: sample + sample_select of
        ``logits``; [(row_start, rows_b, buffer)] for the per-row copies into ``logits``)."""
        got = self.vheads.get(nb)
        if got is None:
            H = self.dims["H"]
            rec = self._recorder(f"vhead{nb}", 16)
            blocks = []
            for blk in self.tensor("output")["blocks"]:
                buf = self._buf(4 * nb * blk["rows"], f"vlogits{nb}")   # (nb, rows_b) f32
                k = self.kernel("matvec_multi", rows=blk["rows"], cols=H, nb=nb,
                                **self.wdims("output"))
                rec.dispatch(k, {"x": self.whole(self.xn, 4 * self.chunk * H), **self.parts(blk),
                                 "y": self.whole(buf, 4 * nb * blk["rows"])},
                             self.fill(k, n_tok=Dyn("n_tok")), {})
                blocks.append((blk["row_start"], blk["rows"], buf))
            if self.sampler is None:
                self.sampler = self._recorder("sampler", 8)
                self._record_sample(self.sampler)
            got = self.vheads[nb] = (rec, self.sampler, blocks)
        return got

    def record_lm_all(self) -> None:
        """Logits of every row of a prefill piece (tests / ``Engine.logits``).

        The (rows, rows_b) f32 output of one LM-head row block must fit one storage binding
        and one buffer: a 128,256-token vocabulary at 512 rows is 262 MB, twice WebGPU's
        default 128 MiB. So ``lm_rows`` (<= chunk) rows are scored at a time and
        ``Engine.logits`` prefills in pieces of ``lm_rows`` tokens."""
        if self.lm_all is not None:
            return
        H = self.dims["H"]
        blocks = self.tensor("output")["blocks"]
        limit = min(self.caps.max_storage_binding,
                    int(self.gpu.limits.get("max_buffer_size", self.caps.max_storage_binding)))
        self.lm_rows = max(1, min(self.chunk, limit // (4 * max(b["rows"] for b in blocks))))
        T = self.lm_rows
        r = self._recorder("lm_all", 64)
        self.lm_blocks = []
        for blk in blocks:
            buf = self._buf(4 * T * blk["rows"], "logits_all")  # (lm_rows, rows_b) f32
            k = self.kernel("matmul", rows=blk["rows"], cols=H, accumulate=0,
                            **self.wdims("output"))
            params = self.fill(k, n_tok=Dyn("n_tok"), row_offset=0)
            r.dispatch(k, {"x": self.whole(self.xn, 4 * T * H), **self.parts(blk),
                           "y": self.whole(buf, 4 * T * blk["rows"])}, params,
                       {"n_tok": Dyn("n_tok")})
            self.lm_blocks.append((blk["row_start"], blk["rows"], buf))
        self.lm_all = r
