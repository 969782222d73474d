"""The calibrated quantizers, in numpy on small layers: GPTQ's update against a direct least-squares
solution, AWQ's folding (quantization off: the model computes the same logits), the weighted block
search never worse than round-to-nearest, and the parts they write decoded by the ordinary
dequantizer (ordinary q4_0 / q4_1 / q8_0 blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from modelfmt.config import ModelConfig
from weights_tool import awq, blockq
from weights_tool.calibrate import LayerQuantizer
from weights_tool.forward import LINEARS, LayerForward, final_logits
from weights_tool.gptq import gptq_columns, gptq_quantize, inverse_cholesky, refit_scales
from modelfmt.quantize import dequantize, quantize


def _inputs(rng, n, cols):
    """Calibration-like inputs: channels of very different magnitude, a few outliers."""
    scale = np.exp(rng.normal(0, 1, cols)).astype(np.float32)
    scale[rng.choice(cols, 3, replace=False)] *= 20
    return (rng.standard_normal((n, cols)).astype(np.float32) * scale)


def test_gptq_update_is_the_least_squares_solution():
    """Quantize group 0 only (the others pass through): the free columns GPTQ leaves must be
    argmin ||X w_free - (X w - X_0 q_0)|| (damp 0: the exact objective)."""
    rng = np.random.default_rng(0)
    n, rows, cols, G = 300, 6, 96, 32
    X = _inputs(rng, n, cols)
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    U, dead = inverse_cholesky(X.T @ X, damp=0.0)
    assert not dead.any()

    def quant_group(g, Wg):
        return (lambda j, w: np.round(w * 2) / 2) if g == 0 else (lambda j, w: w)

    out = gptq_columns(W.copy(), U, quant_group, G)
    q0 = out[:, :G]
    assert np.array_equal(q0, np.round(q0 * 2) / 2)
    rhs = (X @ W.T - X[:, :G] @ q0.T).astype(np.float64)               # (n, rows)
    want, *_ = np.linalg.lstsq(X[:, G:].astype(np.float64), rhs, rcond=None)
    moved = np.abs(out[:, G:] - W[:, G:]).max()
    assert moved > 0.05                                                 # the update did work
    np.testing.assert_allclose(out[:, G:], want.T, atol=2e-4 * max(1.0, moved))


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0"])
def test_gptq_parts_decode_and_beat_rtn(fmt):
    rng = np.random.default_rng(1)
    rows, cols = 48, 128
    X = _inputs(rng, 512, cols)
    W = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    parts, deq = gptq_quantize(W, X.T @ X, fmt)
    np.testing.assert_array_equal(dequantize(parts, fmt, rows, cols), deq)
    rtn = dequantize(quantize(W, fmt), fmt, rows, cols)

    def out_err(Wq):
        return float(np.square(X @ (Wq - W).T).sum())
    assert out_err(deq) < 0.7 * out_err(rtn), (out_err(deq), out_err(rtn))


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1"])
def test_refit_scales_is_the_least_squares_solution(fmt):
    """With GPTQ's codes fixed, refit_scales' scales (and mins) of one row must be the direct
    least-squares solution of min ||Hd^1/2 (w - B^T x)|| over the (K ng) block basis B, up to the
    f16 rounding of the result, and never raise the damped objective of any row."""
    rng = np.random.default_rng(3)
    n, rows, cols, G, damp = 400, 8, 128, 32, 0.1
    X = _inputs(rng, n, cols)
    W = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    H = X.T @ X
    parts, _ = gptq_quantize(W, H, fmt, G, damp)
    ng = cols // G
    deq0 = dequantize(parts, fmt, rows, cols)
    d0 = parts["scales"].view(np.float16).astype(np.float32).reshape(rows, ng)
    m0 = parts["mins"].view(np.float16).astype(np.float32).reshape(rows, ng) \
        if fmt == "q4_1" else None
    # the codes GPTQ stored: invert the dequantization block by block
    q = np.rint((deq0.reshape(rows, ng, G) - (m0[..., None] if m0 is not None else 0))
                / np.where(d0 != 0, d0, 1)[..., None]).reshape(rows, cols)
    d, m = refit_scales(W, q, d0, m0, H, damp, G)
    Hd = H.astype(np.float64) + damp * np.mean(np.diag(H)) * np.eye(cols)
    L = np.linalg.cholesky(Hd)                                         # Hd = L L^T

    def objective(dd, mm):                                             # (rows,)
        wq = q.reshape(rows, ng, G) * dd[..., None] + (mm[..., None] if mm is not None else 0)
        e = W - wq.reshape(rows, cols)
        return np.einsum("ri,ij,rj->r", e, Hd, e)
    assert (objective(d, m) <= objective(d0, m0) * (1 + 1e-6)).all()
    assert objective(d, m).sum() < objective(d0, m0).sum()            # it did something
    for r in range(rows):
        B = np.zeros((ng * (2 if fmt == "q4_1" else 1), cols))         # (K ng, cols) basis
        for g in range(ng):
            B[g, g * G:(g + 1) * G] = q[r, g * G:(g + 1) * G]
            if fmt == "q4_1":
                B[ng + g, g * G:(g + 1) * G] = 1.0
        x, *_ = np.linalg.lstsq(L.T @ B.T, L.T @ W[r].astype(np.float64), rcond=None)
        got = np.concatenate([d[r], m[r]]) if fmt == "q4_1" else d[r]
        np.testing.assert_allclose(got, x, rtol=2e-3, atol=1e-3 * np.abs(x).max())


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0"])
def test_weighted_search_never_worse_than_rtn(fmt):
    rng = np.random.default_rng(2)
    rows, cols = 64, 256
    W = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    W[:, 5] += 0.3                                                      # an outlier column
    hw = np.exp(rng.normal(0, 1, cols)).astype(np.float32)
    parts, deq = blockq.quantize_weighted(W, fmt, hw)
    np.testing.assert_array_equal(dequantize(parts, fmt, rows, cols), deq)
    rtn = dequantize(quantize(W, fmt), fmt, rows, cols)
    werr = lambda Wq: ((Wq - W) ** 2 * hw).reshape(rows, -1, 32).sum(-1)   # per block
    assert (werr(deq) <= werr(rtn) * (1 + 1e-5) + 1e-12).all()
    assert werr(deq).sum() < 0.9 * werr(rtn).sum()


def _tiny_cfg(**over):
    d = dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
             rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=True)
    d.update(over)
    return ModelConfig(**d)


def _tiny_weights(cfg, rng):
    H, F, Q, KV = cfg.hidden_size, cfg.intermediate_size, cfg.q_dim, cfg.kv_dim
    layers = []
    for _ in range(cfg.num_hidden_layers):
        lw = {"attention.wq": (Q, H), "attention.wk": (KV, H), "attention.wv": (KV, H),
              "attention.wo": (H, Q), "feed_forward.w1": (F, H), "feed_forward.w3": (F, H),
              "feed_forward.w2": (H, F)}
        lw = {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in lw.items()}
        for k in ("attention_norm", "ffn_norm"):
            w = (1 + 0.2 * rng.standard_normal(H)).astype(np.float32)
            w[rng.choice(H, 2, replace=False)] *= 8                     # outlier channels
            lw[k] = w
        layers.append(lw)
    emb = (rng.standard_normal((cfg.vocab_size, H)) * 0.5).astype(np.float32)
    return emb, layers, (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)


def _logits(cfg, emb, layers, norm, ids):
    fw = LayerForward(cfg, ids.shape[1])
    x = emb[ids.reshape(-1)]
    for lw in layers:
        x = fw(x, lw)
    return final_logits(x, norm, emb, cfg.rms_norm_eps)


def test_awq_fold_keeps_the_model_when_quantization_is_off():
    """Scales searched for q4_0 and folded into attention_norm / ffn_norm / wv rows / w3 rows;
    the weights kept in f32: logits equal the original's to f32 round-off."""
    cfg = _tiny_cfg()
    rng = np.random.default_rng(3)
    emb, layers, norm = _tiny_weights(cfg, rng)
    ids = rng.integers(0, cfg.vocab_size, (2, 32))
    lq = LayerQuantizer(cfg, "awq", lambda n: "q4_0", 32, quantize=False)
    x = emb[ids.reshape(-1)]
    new_layers = []
    for lw in layers:
        x, res, _ = lq.run(x, lw)
        new_layers.append(res.f32)
        assert not res.parts                                            # nothing quantized
    for k in ("attention_norm", "ffn_norm", "attention.wv", "feed_forward.w3",
              "attention.wo", "feed_forward.w2"):
        changed = max(float(np.abs(n[k] - o[k]).max() / np.abs(o[k]).max())
                      for n, o in zip(new_layers, layers))
        assert changed > 0.05, k                                        # really rescaled
    before = _logits(cfg, emb, layers, norm, ids)
    after = _logits(cfg, emb, new_layers, norm, ids)
    rel = np.abs(after - before).max() / np.abs(before).max()
    assert rel < 2e-5, rel


def test_awq_tied_scales_for_gqa():
    s = np.arange(1, 4 * 16 + 1, dtype=np.float32)                     # (Q,) 4 heads x 16
    t = awq.tie_heads(s, n_heads=4, ratio=2)
    assert np.allclose(t[:16], t[16:32]) and np.allclose(t[32:48], t[48:])
    assert np.allclose(t[:16], (s[:16] + s[16:32]) / 2)
    np.testing.assert_array_equal(awq.kv_part(t, 4, 2), np.concatenate([t[:16], t[32:48]]))


def test_awq_search_includes_no_scaling():
    rng = np.random.default_rng(4)
    X = _inputs(rng, 128, 64)
    W = (rng.standard_normal((32, 64)) * 0.05).astype(np.float32)
    s, alpha, losses = awq.search(X, [W], ["q4_0"])
    assert 0.0 in losses and losses[alpha] <= losses[0.0]
    assert s.shape == (64,) and (s > 0).all()


@pytest.mark.parametrize("fp_target", [False, True])
@pytest.mark.parametrize("method", ["awq", "gptq", "awq+gptq"])
def test_calibrated_layers_beat_rtn_on_the_model_output(method, fp_target):
    """Whole tiny model, every matrix q4_0: the calibrated layers move the logits less than
    round-to-nearest on held-out ids (same distribution as the calibration ids); with
    ``fp_target`` each layer aims at the unquantized model's stream."""
    cfg = _tiny_cfg()
    rng = np.random.default_rng(5)
    emb, layers, norm = _tiny_weights(cfg, rng)
    cal = rng.integers(0, cfg.vocab_size, (8, 32))
    held = rng.integers(0, cfg.vocab_size, (2, 32))
    lq = LayerQuantizer(cfg, method, lambda n: "q4_0", 32)
    x = emb[cal.reshape(-1)]
    x_fp = x.copy() if fp_target else None
    calibrated, rtn = [], []
    for lw in layers:
        x, res, x_fp = lq.run(x, lw, x_fp)
        assert (x_fp is None) == (not fp_target)
        q = dict(res.f32)
        for n in LINEARS:
            q[n] = dequantize(res.parts[n], "q4_0", *res.f32[n].shape)
        calibrated.append(q)
        rtn.append({k: (dequantize(quantize(v, "q4_0"), "q4_0", *v.shape) if v.ndim == 2
                        else v) for k, v in lw.items()})
    ref = _logits(cfg, emb, layers, norm, held)
    err = lambda ls: float(np.square(_logits(cfg, emb, ls, norm, held) - ref).mean())
    assert err(calibrated) < 0.8 * err(rtn), (err(calibrated), err(rtn))
