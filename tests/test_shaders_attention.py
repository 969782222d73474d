"""Attention, RoPE, norms and qkv_rope_decode beyond the generic case runner: the split-K chunk layout,
named refusals, the variants browsers get (default and compatibility-mode limits) for real model
shapes, prefill/decode agreement on the GPU, and qkv_rope_decode -> attention through one shared KV cache.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import shaders
from shaders import attention, qkv_decode, rope

MODELS = {  # (hidden, n_heads, n_kv_heads, head_dim)
    "llama3-8b": (4096, 32, 8, 128),
    "llama3.2-1b": (2048, 32, 8, 64),
    "smollm2-135m": (576, 9, 3, 64),
}


def test_chunk_layout_covers_context_exactly():
    for tile in (64, 128, 256):
        for mc in (4, 64, 256):
            for ctx in list(range(1, 600, 7)) + [4096, 8191, 8192, 131072]:
                n = attention.n_chunks(ctx, tile, mc)
                n_tiles = -(-ctx // tile)
                tpc = -(-n_tiles // mc)
                assert 1 <= n <= mc
                assert n * tpc * tile >= ctx, "positions left out"
                assert (n - 1) * tpc * tile < ctx, "an empty chunk (its partial would be garbage)"


def test_refusals_name_op_and_reason():
    c = shaders.Caps()
    with pytest.raises(shaders.UnsupportedKernel, match="attention_decode.*multiple"):
        shaders.kernel("attention_decode", c, n_heads=6, n_kv_heads=4, head_dim=64)
    with pytest.raises(shaders.UnsupportedKernel, match="attention_prefill.*kv"):
        shaders.kernel("attention_prefill", c, n_heads=4, n_kv_heads=4, head_dim=64, kv="bf16")
    with pytest.raises(shaders.UnsupportedKernel, match="head_dim"):
        shaders.kernel("attention_combine", c, n_heads=4, n_kv_heads=4, head_dim=36)
    with pytest.raises(shaders.UnsupportedKernel, match="attention_decode: nb .*query rows"):
        shaders.kernel("attention_decode", c, n_heads=4, n_kv_heads=4, head_dim=64, nb=65)
    with pytest.raises(shaders.UnsupportedKernel, match="attention_combine: nb"):
        shaders.kernel("attention_combine", c, n_heads=4, n_kv_heads=4, head_dim=64, nb=-1)
    with pytest.raises(shaders.UnsupportedKernel, match="workgroup storage"):
        shaders.kernel("attention_decode", replace(c, max_workgroup_storage=4096), n_heads=32,
                       n_kv_heads=4, head_dim=128)
    with pytest.raises(shaders.UnsupportedKernel, match="rope"):
        shaders.kernel("rope", c, n_heads=2, head_dim=63)
    with pytest.raises(shaders.UnsupportedKernel, match="qkv_rope_decode"):
        shaders.kernel("qkv_rope_decode", c, fmt="q4_0", hidden=100, n_heads=2, n_kv_heads=1,
                       head_dim=64)   # 100 columns: not a multiple of the group size
    with pytest.raises(shaders.UnsupportedKernel, match="rmsnorm"):
        shaders.kernel("rmsnorm", c, hidden=0)
    with pytest.raises(shaders.UnsupportedKernel, match="qkv_rope_decode.*14 storage buffers.*allows 8"):
        shaders.kernel("qkv_rope_decode", c, fmt="q4_1", hidden=64, n_heads=2, n_kv_heads=1, head_dim=64)
    with pytest.raises(shaders.UnsupportedKernel, match="gate_up.*8 storage buffers.*allows 7"):
        shaders.kernel("gate_up", replace(c, max_storage_buffers=7), fmt="q4_1", ffn=64, hidden=64)
    with pytest.raises(shaders.UnsupportedKernel, match="heads"):
        shaders.kernel("qkv_rope_decode", c, fmt="f32", hidden=64, n_heads=2, n_kv_heads=1, head_dim=64,
                       heads="vq")


@pytest.mark.parametrize("fmt,limit,split", [
    ("f32", 8, ["qkv"]), ("q4_0", 8, ["q", "kv"]), ("q4_0", 10, ["q", "kv"]),
    ("q4_0", 11, ["qkv"]), ("q4_1", 8, ["q", "k", "v"]), ("q4_1", 10, ["q", "kv"]),
    ("q4_1", 14, ["qkv"]), ("q8_0", 6, ["q", "k", "v"])])
def test_qkv_split_fewest_dispatches_that_fit(fmt, limit, split):
    caps = shaders.Caps(max_storage_buffers=limit)
    assert shaders.qkv_split(caps, fmt) == split
    for h in split:   # the count qkv_split uses is the kernel's own
        k = shaders.kernel("qkv_rope_decode", caps, fmt=fmt, hidden=64, n_heads=2, n_kv_heads=1,
                           head_dim=64, heads=h)
        assert k.storage_buffers <= limit and {b.name[:2] for b in k.bindings} >= {f"w{x}" for x in h}
    with pytest.raises(shaders.UnsupportedKernel, match="storage buffers"):
        shaders.qkv_split(shaders.Caps(max_storage_buffers=4), "q4_1")


def test_min_storage_buffers_for_the_manifest():
    from driver.graph import OPS
    # gate_up q4_1 binds 8 (x, w1 and w3 in 3 parts each, act): the most any split graph needs;
    # rope_append's 6 (q, k_new, v_new, inv_freq, k_cache, v_cache) bounds every format from below
    assert shaders.min_storage_buffers(OPS, "q4_1") == 8
    assert shaders.min_storage_buffers(OPS, "q4_0") == 6
    assert shaders.min_storage_buffers(OPS, "f32") == 6
    assert shaders.min_storage_buffers(["matvec"], "f32") == 3
    with pytest.raises(shaders.UnsupportedKernel, match="probe"):
        shaders.min_storage_buffers(["rope"], "f32")   # not an op of the graph: no probe dims



def test_prefill_tiles_pick_gqa_rows_or_fall_back():
    """tiles="auto": the GQA-row kernel (grid y = KV heads) where a config fits the adapter's
    workgroup memory, today's "v1" (grid y = query heads) where none does; a config that does not
    tile the dims or fit is refused with its reason; a malformed one names the expected form."""
    from shaders import attention_prefill_gqa as gqa
    big, small = shaders.Caps(max_workgroup_storage=49152), shaders.Caps()
    dims = dict(n_heads=32, n_kv_heads=8, kv="f16")
    k = shaders.kernel("attention_prefill", big, head_dim=64, **dims)
    assert dict(k.key.dims)["rq"] == 4 and k.grid(n_tok=151)[1] == 8
    assert k.grid(n_tok=151)[0] == -(-151 // gqa.plan(gqa.CONFIGS[0], big, 32, 8, 64).tq)
    ks = shaders.kernel("attention_prefill", big, head_dim=64, split=1, **dims)
    assert ks.grid(n_tok=151, splits=6)[1:] == (8, 6)
    v1 = shaders.kernel("attention_prefill", big, head_dim=64, tiles="v1", **dims)
    assert "rq" not in dict(v1.key.dims) and v1.grid(n_tok=151)[1] == 32
    # 16 KiB: hd 64 still fits a config, hd 128 does not (today's kernel then)
    assert "rq" in dict(shaders.kernel("attention_prefill", small, head_dim=64, **dims).key.dims)
    assert "rq" not in dict(shaders.kernel("attention_prefill", small, head_dim=128,
                                           **dims).key.dims)
    for cfg in gqa.CONFIGS:     # every config builds for the 1B shape on a 48 KiB adapter
        t = gqa.plan(cfg, big, 32, 8, 64)
        assert t.shared <= 49152 and t.r == t.tq * 4 and t.rp * t.dv * t.wg == t.r * 16
    with pytest.raises(shaders.UnsupportedKernel, match="workgroup storage"):
        shaders.kernel("attention_prefill", small, head_dim=128, tiles="4x4/64/128", **dims)
    with pytest.raises(shaders.UnsupportedKernel, match="whole tokens of 3 heads"):
        shaders.kernel("attention_prefill", big, n_heads=9, n_kv_heads=3, head_dim=64,
                       tiles="4x4/32/64")
    with pytest.raises(shaders.UnsupportedKernel, match="RQxRK/TK/WG"):
        shaders.kernel("attention_prefill", big, head_dim=64, tiles="fast", **dims)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("limits", ["webgpu-default", "compat-128", "subgroups+f16"])
def test_model_shapes_build_within_browser_limits(model, limits):
    hidden, nh, nkv, hd = MODELS[model]
    caps = {"webgpu-default": shaders.Caps(),
            "compat-128": shaders.Caps(max_workgroup_size=128),
            "subgroups+f16": shaders.Caps(shader_f16=True, subgroups=True)}[limits]
    ks = [shaders.kernel(op, caps, n_heads=nh, n_kv_heads=nkv, head_dim=hd, kv=kv)
          for op in ("attention_decode", "attention_combine", "attention_prefill")
          for kv in ("f16", "f32")]
    # the verify variant of a 16-row verify body (split-K pair and the one-pass kernel)
    ks += [shaders.kernel(op, caps, n_heads=nh, n_kv_heads=nkv, head_dim=hd, kv="f16", nb=16,
                          **kn) for op, kn in (("attention_decode", {}), ("attention_combine", {}),
                                               ("attention_decode", {"direct": 1}))]
    # qkv_rope_decode split to fit maxStorageBuffersPerShaderStage (8 by default: q4_* need a split)
    ks += [shaders.kernel("qkv_rope_decode", caps, fmt=f, hidden=hidden, n_heads=nh, n_kv_heads=nkv,
                          head_dim=hd, heads=h) for f in ("q4_0", "q4_1", "q8_0", "f16", "f32")
           for h in shaders.qkv_split(caps, f)]
    ks += [shaders.kernel("rope", caps, n_heads=nh, head_dim=hd),
           shaders.kernel("rmsnorm", caps, hidden=hidden, eps=1e-5),
           shaders.kernel("add_rmsnorm", caps, hidden=hidden, eps=1e-5)]
    for k in ks:
        assert k.workgroup_size[0] <= caps.max_workgroup_size, k.slug
        assert k.storage_buffers <= caps.max_storage_buffers, k.slug
        assert ("enable subgroups;" in k.wgsl) == ("subgroups" in k.features), k.slug
        assert "{{" not in k.wgsl
    gx, gy, gz = ks[0].grid(ctx=131072)
    assert gx <= caps.max_workgroups_per_dim and gy <= caps.max_workgroups_per_dim


@pytest.fixture(scope="module")
def gpu():
    from shaders import harness

    dev = harness.get_device()
    return dev, harness.caps_of(dev)


@pytest.mark.gpu
@pytest.mark.parametrize("kv", ["f16", "f32"])
def test_prefill_last_row_equals_decode(gpu, kv):
    from shaders import harness

    dev, caps = gpu
    nh, nkv, hd, n_tok, pos = 8, 2, 64, 5, 20
    rng = np.random.default_rng(1)
    kb, vb, _, _ = attention.kv_arrays(rng, pos + n_tok, nkv, hd, kv, pos + n_tok)
    q = rng.standard_normal((n_tok, nh * hd)).astype(np.float32)
    dims = dict(n_heads=nh, n_kv_heads=nkv, head_dim=hd, kv=kv)
    kp = shaders.kernel("attention_prefill", caps, **dims)
    pre = harness.run(kp, {"q": q, "k_cache": kb, "v_cache": vb, "out": q.nbytes},
                      {"n_tok": n_tok, "pos": pos}, kp.grid(n_tok=n_tok), ["out"])
    last = pre["out"].view(np.float32).reshape(n_tok, nh * hd)[-1]
    k1, k2 = (shaders.kernel("attention_decode", caps, **dims),
              shaders.kernel("attention_combine", caps, **dims))
    ctx = pos + n_tok
    dec = harness.run_steps(
        [(k1, {"ctx": ctx}, k1.grid(ctx=ctx)), (k2, {"ctx": ctx}, k2.grid())],
        {"q": q[-1], "k_cache": kb, "v_cache": vb, "part": k1.meta["part_bytes"],
         "out": nh * hd * 4}, ["out"])
    np.testing.assert_allclose(dec["out"].view(np.float32), last, atol=2e-6, rtol=1e-5)


@pytest.mark.gpu
def test_qkv_rope_then_decode_attention_share_the_cache(gpu):
    """One decode step of one layer: qkv_rope_decode appends k/v at pos into an f16 cache that already
    holds pos positions, attention_decode/combine read it; numpy does the same in float64."""
    from shaders import harness

    dev, caps = gpu
    hidden, nh, nkv, hd, pos, fmt = 128, 4, 2, 64, 9, "q8_0"
    rng = np.random.default_rng(3)
    bufs, w = {}, {}
    for nm, rows in (("wq", nh * hd), ("wk", nkv * hd), ("wv", nkv * hd)):
        b, w[nm] = harness.weight_parts(rng, fmt, rows, hidden, 32, prefix=nm + "_")
        bufs.update(b)
    x = (rng.standard_normal((1, hidden)) / np.sqrt(hidden)).astype(np.float32)
    inv = np.asarray(rope.case_inv_freq(hd, True), np.float32)
    kc = rng.standard_normal((pos + 4, nkv, hd)).astype(np.float16)
    vc = rng.standard_normal((pos + 4, nkv, hd)).astype(np.float16)
    dims = dict(n_heads=nh, n_kv_heads=nkv, head_dim=hd, kv="f16")
    kq = shaders.kernel("qkv_rope_decode", caps, fmt=fmt, hidden=hidden, group_size=32, **dims)
    k1, k2 = (shaders.kernel("attention_decode", caps, **dims),
              shaders.kernel("attention_combine", caps, **dims))
    ctx = pos + 1
    got = harness.run_steps(
        [(kq, {"n_tok": 1, "pos": pos}, kq.grid(n_tok=1)),
         (k1, {"ctx": ctx}, k1.grid(ctx=ctx)), (k2, {"ctx": ctx}, k2.grid())],
        {**bufs, "x": x, "inv_freq": inv, "q": nh * hd * 4, "k_cache": kc, "v_cache": vc,
         "part": k1.meta["part_bytes"], "out": nh * hd * 4}, ["out"])
    q, k, v = qkv_decode.ref_qkv_rope(x, w["wq"], w["wk"], w["wv"], inv, nh, nkv, hd, pos)
    kc64, vc64 = kc.astype(np.float64), vc.astype(np.float64)
    kc64[pos] = k.reshape(nkv, hd).astype(np.float16)   # the cache stores f16
    vc64[pos] = v.reshape(nkv, hd).astype(np.float16)
    ref = attention.ref_attention(q, kc64, vc64, nh, nkv, hd, pos)[0]
    np.testing.assert_allclose(got["out"].view(np.float32), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("knobs", [{}, {"wg": 64, "max_chunks": 4}, {"direct": 1, "wg": 256}],
                         ids=["split-K", "chunk-layout-change", "one-pass"])
def test_verify_rows_are_decode_bit_for_bit(gpu, knobs):
    """attention_decode's verify variant (nb > 0): row i of a pass over n_tok rows ending at ctx
    is exactly (bit for bit) the decode kernel's output for the same q at context
    ctx - n_tok + 1 + i: the same chunks and sums per row. With wg 64 / 4 chunks the rows cross
    8 -> 9 tiles (chunks of 2 tiles -> of 3), so each row keeps its own chunk layout."""
    from shaders import harness

    dev, caps = gpu
    nh, nkv, hd, kv, n_tok, nb, ctx = 12, 4, 128, "f16", 6, 8, 515
    rng = np.random.default_rng(5)
    kb, vb, _, _ = attention.kv_arrays(rng, ctx + 2, nkv, hd, kv, ctx)
    q = rng.standard_normal((nb, nh * hd)).astype(np.float32)
    dims = dict(n_heads=nh, n_kv_heads=nkv, head_dim=hd, kv=kv, **knobs)
    cdims = {k: v for k, v in dims.items() if k != "direct"}

    def run(q_rows, params, n, nb_):
        k1 = shaders.kernel("attention_decode", caps, **dims, nb=nb_)
        steps = [(k1, params, k1.grid(ctx=params["ctx"], n_tok=n))]
        if not knobs.get("direct"):
            k2 = shaders.kernel("attention_combine", caps, **cdims, nb=nb_)
            steps.append((k2, params, k2.grid(n_tok=n)))
        got = harness.run_steps(steps, {"q": q_rows, "k_cache": kb, "v_cache": vb,
                                        "part": max(16, k1.meta["part_bytes"]),
                                        "out": q_rows.nbytes}, ["out"])
        return got["out"].view(np.float32)[:q_rows.size].reshape(q_rows.shape)

    rows = run(q, {"ctx": ctx, "n_tok": n_tok}, n_tok, nb)
    for i in range(n_tok):
        dec = run(q[i:i + 1], {"ctx": ctx - n_tok + 1 + i}, 1, 0)[0]
        assert np.array_equal(rows[i], dec), (i, np.abs(rows[i] - dec).max())
    # and the numpy reference (causal), to the check tolerance
    k64 = np.frombuffer(kb, np.float16).reshape(ctx + 2, nkv, hd)[:ctx].astype(np.float64)
    v64 = np.frombuffer(vb, np.float16).reshape(ctx + 2, nkv, hd)[:ctx].astype(np.float64)
    ref = attention.ref_attention(q[:n_tok], k64, v64, nh, nkv, hd, ctx - n_tok)
    np.testing.assert_allclose(rows[:n_tok], ref, atol=2e-5, rtol=1e-4)
