"""Calibrated packing: run the model on calibration text one layer at a time (numpy, float32) and
quantize each layer's matrices with AWQ scaling and / or GPTQ before moving to the next layer.

``CalibratedSource`` wraps a Source. Its ``tensors()`` stream yields, layer after layer, tensors
whose ``load_f32()`` is the (scaled) weight and whose ``native(fmt)`` is the calibrated parts, so
``pack`` writes them as it writes any lossless copy. Only one layer's weights, the residual stream
x (N, H) of the N calibration tokens and that layer's activations (N, F) are alive at a time.

Per layer (``LayerQuantizer.run``), every step on the inputs the previous steps really produce
(the quantized weights of this and earlier layers: GPTQ's sequential order):
  1. xn = attention RMSNorm(x); AWQ: scales for wq/wk/wv folded into attention_norm
  2. fp attention output o; AWQ: scales for wo (tied per KV head) folded into wv rows
  3. wq, wk, wv quantized (Hessian of xn); o recomputed with them; wo quantized (Hessian of o)
  4. x += o wo'^T; xf = FFN RMSNorm(x); AWQ: scales for w1/w3 folded into ffn_norm
  5. fp act = silu(xf w1^T) * (xf w3^T); AWQ: scales for w2 folded into w3 rows
  6. w1, w3 quantized; act recomputed; w2 quantized; x += act w2'^T
Methods: "awq" = 1-6 with the activation-weighted block search (blockq, which also searches the
clipping); "gptq" = no scaling, GPTQ; "awq+gptq" = both.

A matrix whose source block type already IS its target format (a Q4_1 GGUF packed as q4_1) is
copied bit-exactly, never re-rounded: no method beats zero error. AWQ leaves alone every group
whose fold would touch such a matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import awq, blockq
from .errors import PackError
from .forward import LINEARS, LayerForward, rmsnorm
from .gptq import gptq_quantize
from modelfmt.quantize import dequantize, quantize
from .source import Source, SourceTensor

FOUR_BIT = ("q4_0", "q4_1")
METHODS = ("rtn", "awq", "gptq", "awq+gptq")
CALIBRATED = ("awq", "gptq", "awq+gptq")
DEFAULT_TOKENS = 4096
# ``--method auto``: the best method measured per format on SmolLM2-135M-Instruct
# (docs/QUANTIZATION.md); formats not listed get rtn.
BEST = {"q4_0": "gptq", "q4_1": "gptq"}
# Measured on SmolLM2 (docs/QUANTIZATION.md): GPTQ aimed at the unquantized model's outputs
# (FP_TARGET) with damp 1.0 (the fraction of mean(diag H) added, also the ridge of the target
# correction); GPTQ's own 0.01 over-fits a few thousand calibration tokens.
CALIB_DAMP = 1.0
DEFAULT_WINDOW = 512
SEARCH_ROWS = 256          # calibration rows the AWQ scale search and the error report use
FP_TARGET = True           # aim every layer at the unquantized model's output (``_quant``)
GPTQ_REFIT = 0             # gptq.gptq_quantize's ``refit`` passes (block scales refitted after)


def best_method(quant: str, src: Source, fmt_of) -> str:
    """``auto``: BEST[quant] when calibration is possible and changes something (the
    checkpoint has a tokenizer and some matrix would be re-quantized), else rtn."""
    m = BEST.get(quant, "rtn")
    if m == "rtn" or "tokenizer.json" not in src.tokenizer_files():
        return "rtn"
    probe = CalibratedSource(src, m, fmt_of, None)
    return m if probe.requantized() else "rtn"


# ---- calibration tokens ----
@dataclass
class Calibration:
    """Token windows (n_win, W) int64 and where they came from (recorded in the manifest)."""
    windows: np.ndarray
    text_name: str
    sha256: str

    def record(self) -> dict:
        return {"text": self.text_name, "sha256": self.sha256,
                "tokens": int(self.windows.size), "window": int(self.windows.shape[1])}


def calibration_tokens(src: Source, calib_file=None, n_tokens: int = DEFAULT_TOKENS,
                       window: int = DEFAULT_WINDOW) -> Calibration:
    """Tokenize the calibration text with the checkpoint's own tokenizer and cut ``n_tokens``
    into windows of ``window`` (each starting with the tokenizer's special prefix, e.g. BOS),
    spread evenly over the text. PackError on a missing / empty / too short text."""
    from . import corpus
    if not (isinstance(n_tokens, int) and n_tokens >= 16):
        raise PackError("--calib-tokens", f"needs an integer >= 16, got {n_tokens!r}",
                        f"Use the default {DEFAULT_TOKENS}")
    if calib_file is None:
        text, name = corpus.calibration_text(), "shakespeare calibration split"
    else:
        text, name = corpus.read_text_file(calib_file, "calibration"), str(calib_file)
    tok_json = src.tokenizer_files().get("tokenizer.json")
    if tok_json is None:
        raise PackError(src.path, "the checkpoint has no tokenizer, which calibration needs",
                        "Add tokenizer.json to the model folder or use --method rtn")
    from tokenizers import Tokenizer
    try:
        tok = Tokenizer.from_str(tok_json.decode("utf-8"))
    except Exception as e:  # the tokenizers package raises its own exception type
        raise PackError(src.path, f"cannot read tokenizer.json ({e})",
                        "Fix the tokenizer or use --method rtn") from None
    prefix = tok.encode("", add_special_tokens=True).ids
    ids = np.asarray(tok.encode(text, add_special_tokens=False).ids, np.int64)
    window = max(len(prefix) + 8, min(window, n_tokens, src.config.max_position_embeddings))
    n_win = -(-n_tokens // window)
    body = window - len(prefix)
    if len(ids) < n_win * body:
        raise PackError(calib_file or "calibration text", f"holds {len(ids)} tokens, fewer than "
                        f"the {n_win * body} calibration needs ({n_win} windows of {body})",
                        "Give a longer text or lower --calib-tokens")
    starts = np.linspace(0, len(ids) - body, n_win).astype(np.int64)
    win = np.stack([np.concatenate([np.asarray(prefix, np.int64), ids[s:s + body]])
                    for s in starts])                                   # (n_win, W)
    if win.max(initial=0) >= src.config.vocab_size:
        raise PackError(src.path, "the tokenizer yields ids beyond the model's vocabulary",
                        "Check that the tokenizer belongs to this model")
    return Calibration(win, name, corpus.sha256_text(text))


# ---- one layer ----
@dataclass
class LayerResult:
    f32: dict = field(default_factory=dict)     # short name -> transformed float32 weight
    parts: dict = field(default_factory=dict)   # short name -> calibrated parts (quantized only)
    report: dict = field(default_factory=dict)  # short name -> {"err": rel. output error, ...}


def _rel_err(X, w, wq) -> float:
    y = X @ w.T
    return float(np.square(X @ wq.T - y).sum() / max(np.square(y).sum(), 1e-30))


class LayerQuantizer:
    def __init__(self, cfg, method: str, fmt_of, window: int, group_size: int = 32,
                 report: bool = False, damp: float = CALIB_DAMP, frozen=lambda name: False,
                 quantize: bool = True):
        """``quantize=False`` (tests): search and fold the AWQ scales but keep every weight in
        f32, so the transformed layer must compute what the original did."""
        if method not in CALIBRATED:
            raise ValueError(f"not a calibrated method: {method!r}")
        self.cfg, self.method, self.fmt_of, self.G = cfg, method, fmt_of, group_size
        self.fw = LayerForward(cfg, window)
        self.use_awq = method in ("awq", "awq+gptq")
        self.use_gptq = method in ("gptq", "awq+gptq")
        self.report, self.damp, self.frozen, self.quantize = report, damp, frozen, quantize

    def _sub(self, X):
        """Evenly spaced rows of X for the scale search / error report: (<= SEARCH_ROWS, cols)."""
        step = max(1, X.shape[0] // SEARCH_ROWS)
        return X[::step][:SEARCH_ROWS]

    def _stats(self, X, Xfp):
        """Per input: H = X^T X (cols, cols) and, with an fp stream, C = X^T (Xfp - X)."""
        H = X.T @ X
        C = None if Xfp is None else X.T @ (Xfp - X)
        return X, H, C

    def _quant(self, res: LayerResult, lw: dict, name: str, stats) -> None:
        """Quantize lw[name] for the inputs of ``stats`` (``_stats``): lw[name] becomes the
        dequantized weight. With an fp stream the target is the ORIGINAL model's output
        X_fp W^T, not X W^T: min ||X W'^T - X_fp W^T||^2 = ||X (W' - W*)^T||^2 + const with
        W*^T = W^T + (H + damp)^-1 X^T (X_fp - X) W^T, so W* (the weights that best undo the
        upstream quantization error on these inputs, ridge-damped towards W) is quantized."""
        X, H, C = stats
        w = lw[name]
        res.f32[name] = w
        fmt = self.fmt_of(name)
        if self.frozen(name) or not self.quantize:    # copied bit-exactly: w is what is stored
            return
        if fmt not in blockq.CODE_RANGE:   # f16 / f32 / K-quants: their own rounding (pack's)
            lw[name] = dequantize(quantize(w, fmt), fmt, *w.shape) if fmt != "f32" else w
            return
        target = w
        if C is not None:
            A = H.astype(np.float64)
            A[np.diag_indices_from(A)] += self.damp * float(np.mean(np.diag(A))) + 1e-12
            target = w + np.linalg.solve(A, C.astype(np.float64) @ w.T.astype(np.float64)) \
                .T.astype(np.float32)
            del A   # (cols, cols) f64, 1.6 GB for an 8B w2: not held through GPTQ's own copies
        if self.use_gptq:
            parts, deq = gptq_quantize(target, H, fmt, self.G, self.damp, GPTQ_REFIT)
        else:
            parts, deq = blockq.quantize_weighted(target, fmt, np.diag(H) / X.shape[0], self.G)
        res.parts[name] = parts
        if self.report:
            Xs = self._sub(X)
            rtn = dequantize(quantize(w, fmt, self.G), fmt, *w.shape, self.G)
            res.report[name] = {"err": _rel_err(Xs, w, deq), "rtn_err": _rel_err(Xs, w, rtn)}
        lw[name] = deq

    def _scale(self, X, names, lw, ratio=1, fold=None):
        """AWQ search for the matrices ``names`` reading X; returns s (cols,) or None (no AWQ,
        nothing quantized, or the matrix ``fold`` the inverse goes into is a bit-exact copy)."""
        if not self.use_awq or any(self.frozen(n) for n in names + [fold] if n):
            return None
        fmts = [self.fmt_of(n) for n in names]
        if not any(f in blockq.CODE_RANGE for f in fmts):
            return None
        s, _, _ = awq.search(self._sub(X), [lw[n] for n in names], fmts, self.G,
                             self.cfg.num_attention_heads, ratio)
        return s

    def run(self, x: np.ndarray, lw: dict, x_fp: np.ndarray | None = None):
        """x (N, H) residual stream in; lw: this layer's float32 weights. ``x_fp`` (N, H): the
        same tokens' residual stream in the unquantized model (``fp_target``), or None.
        Returns (next x, LayerResult, next x_fp)."""
        fw, c, res = self.fw, self.cfg, LayerResult()
        lw = {k: np.array(v, np.float32) for k, v in lw.items()}
        fp = x_fp is not None
        qkv = ["attention.wq", "attention.wk", "attention.wv"]
        # attention block
        xn = fw.attn_in(x, lw)                                          # (N, H)
        xn_fp = fw.attn_in(x_fp, lw) if fp else None
        s = self._scale(xn, qkv, lw)
        if s is not None:
            lw["attention_norm"] = lw["attention_norm"] / s
            for n in qkv:
                lw[n] = lw[n] * s
            xn = xn / s
            xn_fp = xn_fp / s if fp else None
        if self.use_awq:
            o = fw.attention(xn, lw)                                    # (N, Q) fp weights
            s = self._scale(o, ["attention.wo"], lw, c.gqa_ratio, fold="attention.wv")
            if s is not None:
                lw["attention.wv"] = lw["attention.wv"] / awq.kv_part(
                    s, c.num_attention_heads, c.gqa_ratio)[:, None]
                lw["attention.wo"] = lw["attention.wo"] * s
            del o
        fpw = dict(lw)                                  # the (scaled) float weights
        st = self._stats(xn, xn_fp)
        for n in qkv:
            self._quant(res, lw, n, st)
        o = fw.attention(xn, lw)                                        # (N, Q) quantized qkv
        o_fp = fw.attention(xn_fp, fpw) if fp else None
        del xn, xn_fp, st
        self._quant(res, lw, "attention.wo", self._stats(o, o_fp))
        x = x + o @ lw["attention.wo"].T
        x_fp = x_fp + o_fp @ fpw["attention.wo"].T if fp else None
        del o, o_fp
        # feed-forward block
        xf = fw.ffn_in(x, lw)                                           # (N, H)
        xf_fp = fw.ffn_in(x_fp, lw) if fp else None
        s = self._scale(xf, ["feed_forward.w1", "feed_forward.w3"], lw)
        if s is not None:
            lw["ffn_norm"] = lw["ffn_norm"] / s
            for n in ("feed_forward.w1", "feed_forward.w3"):
                lw[n] = lw[n] * s
            xf = xf / s
            xf_fp = xf_fp / s if fp else None
        if self.use_awq:
            a = fw.act(xf, lw)                                          # (N, F) fp weights
            s = self._scale(a, ["feed_forward.w2"], lw, fold="feed_forward.w3")
            if s is not None:
                lw["feed_forward.w3"] = lw["feed_forward.w3"] / s[:, None]
                lw["feed_forward.w2"] = lw["feed_forward.w2"] * s
            del a
        fpw = dict(lw)
        st = self._stats(xf, xf_fp)
        for n in ("feed_forward.w1", "feed_forward.w3"):
            self._quant(res, lw, n, st)
        a = fw.act(xf, lw)                                              # (N, F) quantized
        a_fp = fw.act(xf_fp, fpw) if fp else None
        del xf, xf_fp, st
        self._quant(res, lw, "feed_forward.w2", self._stats(a, a_fp))
        x = x + a @ lw["feed_forward.w2"].T
        x_fp = x_fp + a_fp @ fpw["feed_forward.w2"].T if fp else None
        res.f32["attention_norm"], res.f32["ffn_norm"] = lw["attention_norm"], lw["ffn_norm"]
        return x, res, x_fp


# ---- the source wrapper ----
class _Result(SourceTensor):
    """A calibrated tensor: transformed f32 values and, for quantized formats, its parts."""

    def __init__(self, canon, w, fmt, parts, src_dtype):
        self.canon, self.shape, self.src_dtype = canon, tuple(w.shape), src_dtype
        self._w, self._fmt, self._parts = w, fmt, parts

    def load_f32(self):
        return self._w

    def native(self, fmt):
        return self._parts if (self._parts is not None and fmt == self._fmt) else None


class CalibratedSource(Source):
    """``src`` with every decoder layer transformed and quantized by ``method`` (see top)."""

    def __init__(self, src: Source, method: str, fmt_of, calib: Calibration,
                 group_size: int = 32, report: bool = False, log=None,
                 fp_target: bool | None = None):
        self.src, self.kind, self.path = src, src.kind, src.path
        self.config, self.name = src.config, src.name
        self.method, self.fmt_of, self.calib = method, fmt_of, calib
        self.G, self.report, self.log = group_size, report, log
        self.fp_target = FP_TARGET if fp_target is None else fp_target
        self.layer_reports: list[dict] = []

    def tensor_info(self):
        return self.src.tensor_info()

    def tokenizer_files(self):
        return self.src.tokenizer_files()

    def close(self):
        self.src.close()

    def _frozen(self, t) -> bool:
        return t.src_dtype.lower() == self.fmt_of(t.canon)

    def _head(self, by) -> str | None:
        """The LM head's tensor name when the method should quantize it from the final hidden
        states (4-bit target, not a bit-exact copy), else None. Tied: ``tok_embeddings``."""
        name = "output" if "output" in by else "tok_embeddings"
        t = by[name]
        return None if self.fmt_of(name) not in FOUR_BIT or self._frozen(t) else name

    def requantized(self) -> int:
        """How many matrices the method chooses blocks for (0: every matrix is a bit-exact
        copy in its format and there is nothing to calibrate)."""
        by = {t.canon: t for t in self.src.tensors()}
        n = sum(1 for k, t in by.items() if k.startswith("layers.") and len(t.shape) == 2
                and self.fmt_of(k) in blockq.CODE_RANGE and not self._frozen(t))
        return n + (self._head(by) is not None)

    def tensors(self):
        c = self.config
        by = {t.canon: t for t in self.src.tensors()}
        head = self._head(by)
        if not self.requantized():
            yield from self.src.tensors()          # nothing to re-quantize: nothing to calibrate
            return
        emb = by["tok_embeddings"].load_f32()                           # (V, H)
        x = np.ascontiguousarray(emb[self.calib.windows.reshape(-1)], np.float32)  # (N, H)
        x_fp = x.copy() if self.fp_target else None     # the unquantized model's stream
        del emb
        if head != "tok_embeddings":
            yield by.pop("tok_embeddings")
        lq = LayerQuantizer(c, self.method, lambda n: self.fmt_of(n), self.calib.windows.shape[1],
                            self.G, self.report)
        for i in range(c.num_hidden_layers):
            t0 = time.time()
            p = f"layers.{i}."
            lw = {n: by[p + n].load_f32() for n in LINEARS + ("attention_norm", "ffn_norm")}
            lq.fmt_of = lambda n, p=p: self.fmt_of(p + n)
            lq.frozen = lambda n, p=p: self._frozen(by[p + n])
            x, res, x_fp = lq.run(x, lw, x_fp)
            del lw
            self.layer_reports.append({"layer": i, **res.report})
            if self.log:
                self.log(f"layer {i}: {time.time() - t0:.1f} s")
            for n in LINEARS + ("attention_norm", "ffn_norm"):
                t = by.pop(p + n)
                if n in LINEARS and self._frozen(t):
                    yield t                                             # the bit-exact copy
                else:
                    yield _Result(t.canon, res.f32[n], self.fmt_of(t.canon),
                                  res.parts.get(n), t.src_dtype)
            del res
        if head is not None:
            # the LM head reads the final-normed hidden states: its Hessian is theirs
            nw = by["norm"].load_f32()
            xn = rmsnorm(x, nw, c.rms_norm_eps)                         # (N, H)
            xn_fp = rmsnorm(x_fp, nw, c.rms_norm_eps) if x_fp is not None else None
            del x, x_fp
            t = by.pop(head)
            res = LayerResult()
            lw = {"head": t.load_f32()}
            lq.fmt_of = lambda n: self.fmt_of(head)
            lq.frozen = lambda n: False
            lq._quant(res, lw, "head", lq._stats(xn, xn_fp))
            del lw
            yield _Result(t.canon, res.f32["head"], self.fmt_of(head), res.parts["head"],
                          t.src_dtype)
            del res
        yield from by.values()                                          # norm, output
