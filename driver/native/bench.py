"""``python -m driver bench MODEL``: decode and prefill speed against rooflines measured in the same
run. Native only.

Figures: decode tokens/s (3 steps in flight, the engine's default) at context 128, 1024 and 4096
(the KV position is set there directly; the cache holds whatever it holds, attention reads ``ctx``
entries either way), prefill tokens/s for a
512-token prompt, dispatches per token, achieved weight bandwidth (weight bytes read per token x
tokens/s) and its share of a buffer-copy roofline, the f32 FMA peak of a small WGSL kernel and
prefill's share of it, and with ``--vs-torch`` HF transformers bf16 on the same GPU; ``--profile``
adds the GPU time of each op of the prefill and decode programs (``op_profile``).
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time

from driver.profile import op_profile, submit_ms  # noqa: F401  (re-exported: sweep, bench_session)
from driver.sampler import Sampling


def rooflines(gpu, quick: bool, f16: bool) -> dict:
    """Copy bandwidth and FMA peak from shaders.bench (the same measurement the kernel bench
    reports), run on this backend's wgpu device."""
    from shaders import bench as sb
    cp = sb.copy_roofline(gpu.device, quick)
    out = {"copy_gb_s": cp["roofline_gbs"], "fma_f32_gflop_s": sb.fma_peak(gpu.device, False,
                                                                          quick) / 1e9}
    out["fma_gflop_s"] = out["fma_f32_gflop_s"]
    if f16:
        out["fma_f16_gflop_s"] = sb.fma_peak(gpu.device, True, quick) / 1e9
        out["fma_gflop_s"] = out["fma_f16_gflop_s"]  # the arithmetic the prefill kernels use
    return out


async def decode_speed(eng, ctx: int, n: int, depth: int = 3) -> float:
    """Tokens/s of ``n`` pipelined greedy decode steps starting at position ``ctx``."""
    samp = Sampling().runtime(eng.cfg.vocab_size)
    eng.gpu.write_buffer(eng.graph.ids, 0, struct.pack("<I", 1))
    async for _ in eng.decode_steps(ctx, 3, samp, depth, prefilled=False):
        pass  # warm-up: programs for this grid built, pipelines hot
    t = time.perf_counter()
    k = 0
    async for _ in eng.decode_steps(ctx, n + 1, samp, depth, prefilled=False):
        k += 1
    return k / (time.perf_counter() - t)


async def cpu_step_cost(eng, ctx: int, n: int = 50) -> float:
    """Seconds of CPU per decode step spent on the uniform write + encode + submit (the GPU
    work is queued, not waited for, until the end)."""
    samp = Sampling().runtime(eng.cfg.vocab_size)
    G = eng.graph
    t = time.perf_counter()
    for j in range(n):
        G.decode.run(eng._rt(samp, ctx + j, 1, j + 1))
    dt = (time.perf_counter() - t) / n
    await eng.gpu.sync()
    return dt


async def prefill_speed(eng, n: int) -> float:
    rng = random.Random(0)
    ids = [rng.randrange(eng.cfg.vocab_size) for _ in range(n)]
    samp = Sampling().runtime(eng.cfg.vocab_size)
    eng._submit_prefill(ids, samp, head=True)   # warm-up
    await eng.gpu.map_read(eng.graph.rb[0], 0, 4)
    t = time.perf_counter()
    eng._submit_prefill(ids, samp, head=True)
    await eng.gpu.map_read(eng.graph.rb[0], 0, 4)
    return n / (time.perf_counter() - t)


def prefill_flops_per_token(cfg) -> float:
    """Matrix FLOPs per prompt token (2 per multiply-add over every weight matrix, LM head once
    per prompt: excluded) + attention at half the prompt length on average is added by caller."""
    h, q, kv, f = cfg.hidden_size, cfg.q_dim, cfg.kv_dim, cfg.intermediate_size
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * f
    return 2.0 * per_layer * cfg.num_hidden_layers


def torch_speed(model_dir, cfg, prompt_len: int, n_new: int) -> dict | None:
    """HF transformers bf16 on CUDA with random weights of the same shapes (None when absent)."""
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    hf = cfg.to_json()
    hf.pop("architectures", None)
    rs = hf.pop("rope_scaling", None)
    conf = LlamaConfig(**{k: v for k, v in hf.items() if k != "eos_token_id"},
                       rope_scaling=({"rope_type": "llama3", **{k: v for k, v in rs.items()
                                                                 if k != "rope_type"}}
                                     if rs else None))
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):  # random init on the GPU: seconds, not minutes, for 8B
            m = LlamaForCausalLM(conf).eval()
    finally:
        torch.set_default_dtype(old)
    ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), device="cuda")
    with torch.no_grad():
        m.generate(ids[:, :16], max_new_tokens=8, do_sample=False)
        torch.cuda.synchronize()
        t = time.perf_counter()
        m.generate(ids[:, :16], max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
        torch.cuda.synchronize()
        dec = n_new / (time.perf_counter() - t)
        m(ids)
        torch.cuda.synchronize()
        t = time.perf_counter()
        m(ids)
        torch.cuda.synchronize()
        pre = prompt_len / (time.perf_counter() - t)
    return {"decode_tok_s": dec, "prefill_tok_s": pre}


def run_bench(model, quick: bool = False, vs_torch: bool = False, as_json: bool = False,
              out=sys.stdout, profile: bool = False, count_only: bool = False) -> dict:
    from driver.native import load
    loop_ctxs = [16, 64] if quick else [128, 1024, 4096]
    n_dec = 8 if quick else 128
    n_pre = 64 if quick else 512
    if count_only:   # the programs recorded on a null GPU: no GPU work, no GPU memory
        from .sweep import candidates, count_model, format_counts
        res = count_model(model, candidates(quick=True)[:2],
                          [1] + loop_ctxs)
        out.write(json.dumps(res) + "\n" if as_json else format_counts(res))
        return res
    eng = load(model, max_context=max(loop_ctxs) + n_dec + 8, chunk=n_pre)
    gpu = eng.gpu
    res = {"model": str(model), "adapter": gpu.info.get("description", ""),
           "date": time.strftime("%Y-%m-%d"), "quant": eng.manifest.get("quant", {}).get("scheme"),
           "dispatches_per_token": eng.dispatches_per_token,
           "dispatches_by_ctx": {str(c): eng.dispatches_at(c + 1) for c in loop_ctxs},
           "weight_bytes_per_token": eng.weight_bytes_per_token, "decode": []}

    res.update(rooflines(gpu, quick, eng.graph.caps.shader_f16))

    async def go():
        for c in loop_ctxs:
            res["decode"].append({"ctx": c, "tok_s": await decode_speed(eng, c, n_dec)})
        res["decode_unpipelined_tok_s"] = await decode_speed(eng, loop_ctxs[0], n_dec, depth=1)
        res["decode_depth2_tok_s"] = await decode_speed(eng, loop_ctxs[0], n_dec, depth=2)
        res["cpu_ms_per_step"] = 1e3 * await cpu_step_cost(eng, loop_ctxs[0])
        res["prefill_tokens"] = n_pre
        res["prefill_tok_s"] = await prefill_speed(eng, n_pre)
        if profile:
            samp = Sampling().runtime(eng.cfg.vocab_size)
            res["profile_prefill"] = await op_profile(eng, eng.graph.prefill,
                                                      eng._rt(samp, 0, n_pre, 0), 3)
            res["profile_decode"] = await op_profile(eng, eng.graph.decode,
                                                     eng._rt(samp, loop_ctxs[0], 1, 1), 20)
            res["profile_decode_long"] = await op_profile(eng, eng.graph.decode,
                                                          eng._rt(samp, loop_ctxs[-1], 1, 1), 20)

    eng._run(go())
    best = res["decode"][0]["tok_s"]
    res["weight_gb_s"] = eng.weight_bytes_per_token * best / 1e9
    res["weight_share_of_copy"] = res["weight_gb_s"] / res["copy_gb_s"]
    fl = prefill_flops_per_token(eng.cfg) * res["prefill_tok_s"] / 1e9
    res["prefill_gflop_s"] = fl
    res["prefill_share_of_fma"] = fl / res["fma_gflop_s"]
    if vs_torch:
        t = torch_speed(model, eng.cfg, n_pre, min(n_dec, 64))
        res["torch"] = t
        if t:
            res["vs_torch_decode"] = best / t["decode_tok_s"]
            res["vs_torch_prefill"] = res["prefill_tok_s"] / t["prefill_tok_s"]
    eng.close()
    if as_json:
        out.write(json.dumps(res) + "\n")
    else:
        out.write(format_table(res))
    return res


def format_table(r: dict) -> str:
    peak = "f16" if "fma_f16_gflop_s" in r else "f32"
    lines = [f"# driver bench {r['model']} ({r['quant']}) on {r['adapter']}, {r['date']}",
             f"dispatches/token {r['dispatches_per_token']} (by decode ctx: "
             + ", ".join(f"{c}: {n}" for c, n in r.get("dispatches_by_ctx", {}).items())
             + f"), weights/token "
             f"{r['weight_bytes_per_token'] / 1e6:.2f} MB, copy roofline "
             f"{r['copy_gb_s']:.1f} GB/s, FMA peak {r['fma_gflop_s']:.0f} GFLOP/s ({peak})"]
    for d in r["decode"]:
        lines.append(f"decode ctx {d['ctx']:>5}: {d['tok_s']:8.1f} tok/s")
    lines.append(f"unpipelined (depth 1) decode: {r['decode_unpipelined_tok_s']:.1f} tok/s, "
                 f"depth 2: {r['decode_depth2_tok_s']:.1f} tok/s; CPU per step (uniform write + "
                 f"encode + submit): {r['cpu_ms_per_step']:.3f} ms")
    lines.append(f"weight bandwidth (ctx {r['decode'][0]['ctx']}): {r['weight_gb_s']:.1f} GB/s = "
                 f"{100 * r['weight_share_of_copy']:.1f}% of copy")
    lines.append(f"prefill {r['prefill_tokens']}: {r['prefill_tok_s']:.1f} tok/s = "
                 f"{r['prefill_gflop_s']:.0f} GFLOP/s = {100 * r['prefill_share_of_fma']:.1f}% of "
                 "FMA peak")
    for name in ("prefill", "decode", "decode_long"):
        prof = r.get("profile_" + name)
        if prof:
            total = prof[0][2]
            lines.append(f"{name} by op (each op's dispatches replayed alone; all = "
                         f"{total:.3f} ms for {prof[0][1]} dispatches):")
            for op, n, ms in sorted(prof[1:], key=lambda x: -x[2]):
                lines.append(f"  {op:<20} {n:>5} dispatches {ms:9.3f} ms {100 * ms / total:5.1f}%")
    if r.get("torch"):
        t = r["torch"]
        lines.append(f"torch bf16: decode {t['decode_tok_s']:.1f} tok/s (ratio "
                     f"{r['vs_torch_decode']:.2f}), prefill {t['prefill_tok_s']:.0f} tok/s "
                     f"(ratio {r['vs_torch_prefill']:.2f})")
    elif "torch" in r:
        lines.append("torch: not available (needs torch + CUDA)")
    return "\n".join(lines) + "\n"
