"""Benchmark of the attention / qkv_rope_decode / sampling kernels against the copy roofline of the same run.

    python -m shaders.attention_bench [--quick] [--out FILE] [--sweep] [--short] [--verify]
                                      [--prefill [--tiles LIST]]

Decode attention (attention_decode + attention_combine, one pair per call) over an f16 KV cache:
GB/s counts the K and V bytes read (the useful traffic); each call reads another copy of the
cache so a pass touches more bytes than any L2. "indep" gives every call its own part/out buffers
(throughput), "chain" reuses them (each pair waits for the previous one, like a decode step's
layer chain). Also times qkv_rope_decode (GB/s of weights), causal prefill attention (FLOP/s) and the
two sampling passes at vocab 128256. ``--verify``: a speculative verify pass's attention over 5
rows (nb 8) at ctx 256 / 1024 / 4096, attention_prefill against attention_decode's verify variant
(split-K + combine, and one pass), with decode's one row for scale. ``--prefill``: only
attention_prefill, every tile config against today's kernel (``prefill_sweep``). Native only (numpy, wgpu);
reuses shaders.bench's timers.
"""

from __future__ import annotations

import argparse
import math

from . import bench, harness
from . import kernel   # shaders.kernel: imports every op module first

ROTATE = 384 << 20


def _kv_host(rng, ctx, n_kv, hd, kv):
    import numpy as np
    dt = np.float16 if kv == "f16" else np.float32
    return (rng.standard_normal((ctx, n_kv, hd)).astype(dt).tobytes(),
            rng.standard_normal((ctx, n_kv, hd)).astype(dt).tobytes())


def bench_decode(dev, caps, rng, n_heads=32, n_kv=8, hd=128, kv="f16", ctx=4096, chain=False,
                 n_tok=1, **knobs) -> dict:
    """``nb`` in knobs: the verify variant over ``n_tok`` <= nb query rows ending at ctx."""
    import numpy as np
    dims = dict(n_heads=n_heads, n_kv_heads=n_kv, head_dim=hd, kv=kv, **knobs)
    rows = knobs.get("nb") or 1
    prm = {"ctx": ctx, "n_tok": n_tok} if knobs.get("nb") else {"ctx": ctx}
    k1 = kernel("attention_decode", caps, **dims)
    # direct=1: the one-pass kernel alone (writes out); else the split-K pair
    k2 = None if knobs.get("direct") else kernel("attention_combine", caps, **dims)
    # (rows, n_heads * hd) f32 queries
    kb, vb = _kv_host(rng, ctx, n_kv, hd, kv)
    kvbytes = len(kb) + len(vb)
    copies = max(1, min(64, math.ceil(ROTATE / kvbytes)))
    q = harness.make_buffers({"q": rng.standard_normal(rows * n_heads * hd).astype(np.float32)},
                             dev)
    scratch = {"part": max(16, k1.meta["part_bytes"]), "out": rows * n_heads * hd * 4}
    shared = harness.make_buffers(scratch, dev)
    calls = []
    for _ in range(copies):
        bufs = {**q, **harness.make_buffers({"k_cache": kb, "v_cache": vb}, dev)}
        bufs.update(shared if chain else harness.make_buffers(scratch, dev))
        calls.append([bench._calls(dev, k, bufs, prm, k.grid(ctx=ctx, n_tok=n_tok))
                      for k in (k1, k2) if k is not None])
    t, src = bench.time_calls(calls, dev)
    return {"kernel": k1.slug, "shape": f"ctx={ctx} {n_heads}/{n_kv} hd={hd} {kv}"
            + (f" rows={n_tok}" if knobs.get("nb") else "")
            + "".join(f" {k}={v}" for k, v in knobs.items()) + (" chain" if chain else " indep"),
            "secs": t, "gbs": kvbytes / t / 1e9, "timer": src}


def bench_qkv(dev, caps, rng, fmt="q4_0", hidden=4096, n_heads=32, n_kv=8, hd=128,
              op="qkv_rope_decode", **knobs) -> dict:
    """M = 1 through ``op`` (qkv_rope_decode; ``knobs`` its wg / r / unpack overrides)."""
    import numpy as np
    k = kernel(op, caps, fmt=fmt, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv,
               head_dim=hd, kv="f16", **knobs)
    host = {}
    for nm, rows in (("wq_", n_heads * hd), ("wk_", n_kv * hd), ("wv_", n_kv * hd)):
        host.update(bench._random_parts(rng, fmt, rows, hidden, nm))
    wbytes = sum(len(v) for v in host.values())
    copies = max(1, min(32, math.ceil(ROTATE / wbytes)))
    io = harness.make_buffers({
        "x": rng.standard_normal(hidden).astype(np.float32),
        "inv_freq": np.ones(hd // 2, np.float32), "q": n_heads * hd * 4,
        "k_cache": 2 * n_kv * hd * 2, "v_cache": 2 * n_kv * hd * 2}, dev)
    calls = [[bench._calls(dev, k, {**io, **harness.make_buffers(host, dev)},
                           {"n_tok": 1, "pos": 1}, k.grid(n_tok=1))]
             for _ in range(copies)]
    t, src = bench.time_calls(calls, dev)
    return {"kernel": k.slug, "shape": f"{fmt} h={hidden} {n_heads}/{n_kv} hd={hd} M=1"
            + "".join(f" {a}={b}" for a, b in knobs.items()),
            "secs": t, "gbs": wbytes / t / 1e9, "timer": src}


def bench_prefill(dev, caps, rng, n_tok=512, n_heads=32, n_kv=8, hd=128, kv="f16",
                  arith="f32", pos: int = 0, tiles: str = "auto", split_keys: int = 0) -> dict:
    """One attention_prefill call (``tiles`` as build_prefill's). ``split_keys`` > 0: the engine's
    plan for a chunk after ``pos`` cached positions (driver/prefill_attention.py, SPLIT_KEYS):
    the split variant + attention_prefill_combine when ``split_plan`` says so, timed together."""
    import numpy as np
    from .attention_prefill import MAX_SPLITS, split_plan
    from .attention_prefill_gqa import flops
    dims = dict(n_heads=n_heads, n_kv_heads=n_kv, head_dim=hd, kv=kv, arith=arith, tiles=tiles)
    k = kernel("attention_prefill", caps, **dims)
    splits, span = split_plan(pos, n_tok, k.meta["tk"], split_keys) if n_tok > 1 else (1, 0)
    kb, vb = _kv_host(rng, pos + n_tok, n_kv, hd, kv)
    bufs = harness.make_buffers({
        "q": rng.standard_normal((n_tok, n_heads * hd)).astype(np.float32),
        "k_cache": kb, "v_cache": vb, "out": n_tok * n_heads * hd * 4,
        "part": n_tok * n_heads * MAX_SPLITS * (hd + 2) * 4}, dev)
    if splits > 1:
        ks = kernel("attention_prefill", caps, **dims, split=1)
        kc = kernel("attention_prefill_combine", caps, n_heads=n_heads, head_dim=hd)
        calls = [bench._calls(dev, ks, bufs, {"n_tok": n_tok, "pos": pos, "span": span},
                              ks.grid(n_tok=n_tok, splits=splits)),
                 bench._calls(dev, kc, bufs, {"n_tok": n_tok, "splits": splits},
                              kc.grid(n_tok=n_tok))]
        k = ks
    else:
        calls = [bench._calls(dev, k, bufs, {"n_tok": n_tok, "pos": pos}, k.grid(n_tok=n_tok))]
    t, src = bench.time_calls([calls], dev, min_secs=0.1)
    return {"kernel": k.slug, "shape": f"n_tok={n_tok} {n_heads}/{n_kv} hd={hd} {kv} {arith}"
            + (f" pos={pos}" if pos else "") + (f" splits={splits}" if splits > 1 else ""),
            "secs": t, "flops": flops(n_heads, hd, n_tok, pos) / t, "timer": src}


def prefill_sweep(rep, quick: bool = False, tiles: list[str] | None = None,
                  split_keys: int = 512) -> dict:
    """attention_prefill, every tile config (``attention_prefill_gqa.CONFIGS`` and today's "v1",
    or ``tiles``) on the prefill shapes that matter: a 512-token prompt from an empty cache (8B and
    1B heads) and turn 10 of a ~3,000-token chat (1B heads, 151 rows after 2,699 cached positions,
    the engine's split plan: ``split_keys`` = driver/prefill_attention.py's SPLIT_KEYS). Prints
    TFLOP/s per row and the best config per shape; returns {shape: (config, TFLOP/s)}."""
    from .attention_prefill_gqa import CONFIGS
    dev, caps, rng, say = rep.dev, rep.caps, rep.rng, rep.say
    shapes = ([("prompt 64, 8/2 hd64", dict(n_tok=64, n_heads=8, n_kv=2, hd=64)),
               ("chunk 40 after 600, 8/2 hd64", dict(n_tok=40, pos=600, n_heads=8, n_kv=2, hd=64))]
              if quick else
              [("prompt 512, 8B heads", dict(n_tok=512, n_heads=32, n_kv=8, hd=128)),
               ("prompt 512, 1B heads", dict(n_tok=512, n_heads=32, n_kv=8, hd=64)),
               ("turn 10: 151 after 2699, 1B", dict(n_tok=151, pos=2699, n_heads=32, n_kv=8, hd=64))])
    cfgs = tiles or ["v1", "auto", *CONFIGS]
    say(f"workgroup storage {caps.max_workgroup_storage} B, invocations {caps.max_workgroup_size}")
    say("| shape | tiles | kernel | time (us) | TFLOP/s | vs v1 |")
    say("|---|---|---|---|---|---|")
    best = {}
    for label, shp in shapes:
        base = None
        for cfg in cfgs:
            try:
                r = bench_prefill(dev, caps, rng, kv="f16", tiles=cfg, split_keys=split_keys, **shp)
            except Exception as e:   # a config these dims / this adapter cannot take: say so, go on
                say(f"| {label} | {cfg} | {type(e).__name__}: {e} | | | |")
                continue
            base = r["flops"] if cfg == "v1" else base
            vs = f"{r['flops'] / base:.2f}x" if base else "-"
            say(f"| {label} | {cfg} | {r['kernel']} | {r['secs'] * 1e6:.1f} | "
                f"{r['flops'] / 1e12:.3f} | {vs} |")
            if cfg != "auto" and r["flops"] > best.get(label, ("", 0.0))[1]:
                best[label] = (cfg, r["flops"])
    for label, (cfg, fl) in best.items():
        say(f"best for {label}: tiles={cfg} ({fl / 1e12:.2f} TFLOP/s)")
    return best


def bench_sample(dev, caps, rng, vocab=128256, **params) -> dict:
    import numpy as np
    k1, k2 = kernel("sample", caps, vocab=vocab), kernel("sample_select", caps, vocab=vocab)
    p = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "rep_penalty": 1.0, "seed": 1,
         "step": 0, "n_hist": 0, **params}
    bufs = harness.make_buffers({"logits": (rng.standard_normal(vocab) * 3).astype(np.float32),
                                 "history": np.arange(64, dtype=np.uint32),
                                 "cand": k1.meta["cand_bytes"], "out": 4}, dev)
    calls = [[bench._calls(dev, k1, bufs, p, k1.grid()),
              bench._calls(dev, k2, bufs, p, (1, 1, 1))]]
    t, src = bench.time_calls(calls, dev)
    mode = ("greedy" if p["temperature"] <= 0 else
            f"T={p['temperature']} k={p['top_k']} p={p['top_p']} pen={p['rep_penalty']}")
    return {"kernel": k1.slug, "shape": f"V={vocab} {mode}", "secs": t,
            "gbs": vocab * 4 / t / 1e9, "timer": src}


def main(quick: bool = False, out_file: str | None = None, sweep: bool = False,
         short: bool = False, verify: bool = False, prefill: bool = False,
         tiles: list[str] | None = None) -> int:
    import time

    rep = bench.Report()
    dev, caps, rng, say = rep.dev, rep.caps, rep.rng, rep.say
    if prefill:   # the prefill-attention tile sweep alone
        say(f"# attention_prefill tile sweep {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
            f"on {harness.adapter_name(dev)}")
        prefill_sweep(rep, quick, tiles)
        rep.save(out_file)
        return 0

    say(f"# attention/qkv/sample bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{harness.adapter_name(dev)}; caps f16={caps.shader_f16} subgroups={caps.subgroups}")
    roof = bench.copy_roofline(dev, quick)["roofline_gbs"]
    say(f"copy roofline {roof:.0f} GB/s (read+write)")
    say("| kernel | shape | time (us) | GB/s | % copy roofline | timer |")
    say("|---|---|---|---|---|---|")

    def row(r):
        extra = (f"{r['gbs']:.0f} | {100 * r['gbs'] / roof:.0f}%" if "gbs" in r
                 else f"{r['flops'] / 1e12:.2f} TFLOP/s | -")
        say(f"| {r['kernel']} | {r['shape']} | {r['secs'] * 1e6:.1f} | {extra} | {r['timer']} |")

    ctxs = [512] if quick else [4096, 1024, 16384]
    for ctx in ctxs:
        for chain in (False, True):
            row(bench_decode(dev, caps, rng, ctx=ctx, chain=chain,
                             **({"n_heads": 8, "n_kv": 2} if quick else {})))
    if sweep and not quick:
        for wg in (64, 128, 256):
            for mc in (32, 64, 128, 256):
                try:
                    row(bench_decode(dev, caps, rng, ctx=4096, wg=wg, max_chunks=mc))
                except Exception as e:  # an unsupported knob combination: say so, go on
                    say(f"| - | wg={wg} mc={mc} | {type(e).__name__}: {e} | | | |")
    if short:   # driver.graph.DecodeOptions.short_ctx: one pass against split-K + combine
        shapes = ([{"n_heads": 8, "n_kv": 2, "hd": 64}] if quick else
                  [{"n_heads": 32, "n_kv": 8, "hd": 64}, {"n_heads": 32, "n_kv": 8, "hd": 128}])
        for shp in shapes:
            for ctx in ((64, 300) if quick else (128, 256, 384, 512, 768, 1024, 2048)):
                for knobs in ({}, {"direct": 1, "wg": 128}, {"direct": 1, "wg": 256}):
                    row(bench_decode(dev, caps, rng, ctx=ctx, chain=True, **shp, **knobs))
    if verify:   # a verify pass's attention: 5 rows on the nb = 8 body (driver.speculative)
        shapes = ([{"n_heads": 8, "n_kv": 2, "hd": 64}] if quick else
                  [{"n_heads": 32, "n_kv": 8, "hd": 128}, {"n_heads": 32, "n_kv": 8, "hd": 64}])
        for shp in shapes:
            for ctx in ((64, 300) if quick else (256, 1024, 4096)):
                row(bench_decode(dev, caps, rng, ctx=ctx, chain=True, **shp))   # 1 row
                row(bench_prefill(dev, caps, rng, n_tok=5, pos=ctx - 5, **shp))
                for knobs in ({}, {"direct": 1, "wg": 256}):
                    row(bench_decode(dev, caps, rng, ctx=ctx, chain=True, n_tok=5, nb=8,
                                     **shp, **knobs))
    qkv_dims = {"hidden": 512, "n_heads": 8, "n_kv": 2} if quick else {}
    row(bench_qkv(dev, caps, rng, **qkv_dims))
    for arith in (("f32", "f16") if caps.shader_f16 else ("f32",)):
        row(bench_prefill(dev, caps, rng, arith=arith,
                          **({"n_tok": 64, "n_heads": 8, "n_kv": 2} if quick else {})))
    v = 4096 if quick else 128256
    row(bench_sample(dev, caps, rng, vocab=v))
    row(bench_sample(dev, caps, rng, vocab=v, temperature=0.7, top_k=40, top_p=0.9,
                     rep_penalty=1.1, n_hist=64))
    row(bench_sample(dev, caps, rng, vocab=v, temperature=1.0))
    rep.save(out_file)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m shaders.attention_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes (CPU adapters)")
    ap.add_argument("--out", metavar="FILE", help="also write the table to FILE")
    ap.add_argument("--sweep", action="store_true", help="workgroup x max_chunks sweep at 4096")
    ap.add_argument("--short", action="store_true",
                    help="one-pass attention (direct=1) against split-K + combine, chained, "
                         "ctx 128..2048 (the decode short_ctx threshold)")
    ap.add_argument("--verify", action="store_true",
                    help="a verify pass's attention (5 rows): attention_prefill against "
                         "attention_decode's verify variant, ctx 256 / 1024 / 4096")
    ap.add_argument("--prefill", action="store_true",
                    help="only attention_prefill: every tile config (and today's 'v1') on a "
                         "512-token prompt (8B and 1B heads) and a turn-10 chunk (151 rows after "
                         "2,699 cached, split + combine); TFLOP/s and the best config per shape")
    ap.add_argument("--tiles", metavar="LIST",
                    help="with --prefill: comma-separated tile configs (v1, auto, RQxRK/TK/WG)")
    a = ap.parse_args()
    raise SystemExit(main(a.quick, a.out, a.sweep, a.short, a.verify, a.prefill,
                          a.tiles.split(",") if a.tiles else None))
