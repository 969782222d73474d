"""Benchmark of the weight-reading kernels against rooflines measured in the same run.

    python -m shaders bench [--quick] [--vs-torch] [--out FILE] [--tune]
    bench.main(decode=True): decode kernels only (unpackings, rows per workgroup)

Per kernel and shape: time per call, achieved GB/s (weights + activations read, outputs written)
and its % of the copy roofline (the best of a WGSL vec4 copy kernel and copy_buffer_to_buffer over
a 512 MiB buffer), and for the matrix-matrix kernels FLOP/s and % of the FMA peak measured by a
small WGSL FMA-loop kernel (f32, and f16 where shader-f16 is present). GPU time comes from
timestamp queries around one compute pass of many calls when the device has them, else wall clock
over the same pass. Weight copies are rotated so that the bytes touched per pass exceed any L2
cache. Native only (numpy, wgpu; torch optional).
"""

from __future__ import annotations

import math
import time

from . import harness
from .core import Kernel
from .decode_loop import XQ_FORMATS, XQ_WORDS
from .registry import kernel

MIB = 1 << 20
MAX_PART = 128 * MIB          # one binding (modelfmt/formats.py MAX_PART_BYTES)
ROTATE_BYTES = 384 * MIB      # weight bytes touched per pass (>> 50 MB L2 of an H100)

FULL_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (128256, 2048)]
QUICK_SHAPES = [(1024, 1024), (2048, 1024), (1024, 2048), (8192, 512)]


# ---- timing ----
def _time_pass(calls, iters: int, device) -> tuple[float, str]:
    """Seconds per iteration of ``calls`` ([(pipeline, bind group, grid), ...] per iteration,
    indexed i % len) run ``iters`` times in one compute pass; (seconds, "gpu-ts" | "wall")."""
    import numpy as np
    import wgpu

    ts = harness.has_timestamps(device)
    enc = device.create_command_encoder()
    kw = {}
    if ts:
        qs = device.create_query_set(type=wgpu.QueryType.timestamp, count=2)
        kw["timestamp_writes"] = {"query_set": qs, "beginning_of_pass_write_index": 0,
                                  "end_of_pass_write_index": 1}
    cp = enc.begin_compute_pass(**kw)
    for i in range(iters):
        for pipe, bg, grid in calls[i % len(calls)]:
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(*grid)
    cp.end()
    if ts:
        rb = device.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE |
                                  wgpu.BufferUsage.COPY_SRC)
        enc.resolve_query_set(qs, 0, 2, rb, 0)
    t0 = time.perf_counter()
    device.queue.submit([enc.finish()])
    if ts:
        t = np.frombuffer(device.queue.read_buffer(rb), np.uint64)
        wall = time.perf_counter() - t0
        gpu = float(t[1] - t[0]) * 1e-9   # wgpu reports timestamps in nanoseconds
        # some drivers give unusable stamps (zero or beyond the wall-clock time): use the wall clock
        if 0 < gpu <= wall * 1.05:
            return gpu / iters, "gpu-ts"
        return wall / iters, "wall"
    _wait(device)
    return (time.perf_counter() - t0) / iters, "wall"


def _wait(device) -> None:
    """Block until the queue is idle: read back a tiny buffer (wgpu-py 0.32's
    on_submitted_work_done_sync is broken: a cffi callback signature mismatch)."""
    import wgpu

    b = device.create_buffer(size=16, usage=wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST)
    device.queue.read_buffer(b)


def time_calls(calls, device, min_secs: float = 0.05) -> tuple[float, str]:
    """Warm up, then grow the iteration count until one pass takes ``min_secs``; best of 3."""
    _time_pass(calls, 1, device)
    iters = 1
    while True:
        t, src = _time_pass(calls, iters, device)
        if t * iters >= min_secs or iters >= 4096:
            break
        iters = min(4096, max(iters * 2, int(iters * min_secs / max(t * iters, 1e-6))))
    best = min(_time_pass(calls, iters, device) for _ in range(3))
    return best


def _calls(device, kernel_: Kernel, gpu_buffers: dict, params: dict | None, grid):
    pipe, _ = harness.pipeline(kernel_, device)
    return (pipe, harness.bind_group(kernel_, gpu_buffers, params, device), tuple(grid))


# ---- rooflines ----
COPY_WGSL = """
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;        // (n) 16-byte words
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;  // (n)
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = arrayLength(&src);
    let stride = nwg.x * 256u;
    for (var i = gid.x; i < n; i += stride) { dst[i] = src[i]; }
}
"""

FMA_WGSL = """
{{ENABLE}}
@group(0) @binding(0) var<storage, read_write> out: array<f32>;   // (threads) sink against DCE
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = {{T}}(f32(gid.x & 255u) * 1e-4);
    var a0 = vec4<{{T}}>(s); var a1 = a0 + {{T}}(0.1); var a2 = a0 + {{T}}(0.2); var a3 = a0 + {{T}}(0.3);
    var a4 = a0 + {{T}}(0.4); var a5 = a0 + {{T}}(0.5); var a6 = a0 + {{T}}(0.6); var a7 = a0 + {{T}}(0.7);
    let m = vec4<{{T}}>({{T}}(0.999));
    let c = vec4<{{T}}>({{T}}(0.001));
    for (var i = 0u; i < {{ITERS}}u; i++) {   // 8 independent vec4 FMA chains
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
    }
    let t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    out[gid.x] = f32(t.x + t.y + t.z + t.w);
}
"""


def _raw_pipeline(device, src: str, label: str):
    from .core import Binding, KernelKey

    k = Kernel(key=KernelKey(op=label), wgsl=src,
               bindings=tuple(Binding(n, kind) for n, kind in
                              (("src", "read"), ("dst", "read_write"))) if label == "copy"
               else (Binding("out", "read_write"),),
               features=("shader-f16",) if "enable f16" in src else ())
    return k


def copy_roofline(device, quick: bool) -> dict:
    """Best copy bandwidth (read + write bytes per second) of a WGSL vec4 copy kernel and of
    copy_buffer_to_buffer, over a buffer far larger than any cache."""
    import wgpu

    size = (64 if quick else 512) * MIB
    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
    a = device.create_buffer(size=size, usage=usage)
    b = device.create_buffer(size=size, usage=usage)
    k = _raw_pipeline(device, COPY_WGSL, "copy")
    nwg = min(65535, size // 16 // 256)
    call = _calls(device, k, {"src": a, "dst": b}, None, (nwg, 1, 1))
    t_kernel, src = time_calls([[call]], device)
    # copy_buffer_to_buffer: wall clock over many copies in one submit
    iters = 4 if quick else 20
    enc = device.create_command_encoder()
    enc.copy_buffer_to_buffer(a, 0, b, 0, size)
    device.queue.submit([enc.finish()])
    _wait(device)
    enc = device.create_command_encoder()
    for _ in range(iters):
        enc.copy_buffer_to_buffer(a, 0, b, 0, size)
    t0 = time.perf_counter()
    device.queue.submit([enc.finish()])
    _wait(device)
    t_copy = (time.perf_counter() - t0) / iters
    bw_k, bw_c = 2 * size / t_kernel, 2 * size / t_copy
    return {"wgsl_copy_gbs": bw_k / 1e9, "buffer_copy_gbs": bw_c / 1e9,
            "roofline_gbs": max(bw_k, bw_c) / 1e9, "timer": src}


def copy_at_size(device, nbytes: int) -> float:
    """Seconds per dispatch of the vec4 copy kernel moving ``nbytes`` (read + write, half each),
    dispatched back to back over buffer pairs rotated past the cache like the weights of
    ``bench_matvec``: what a kernel that only streams that many bytes per dispatch reaches, so
    a small matrix's % of the copy roofline can be read against it (launch and ramp-up cost
    weigh more the smaller the dispatch)."""
    import wgpu

    k = _raw_pipeline(device, COPY_WGSL, "copy")
    half = max(16, nbytes // 2 // 16 * 16)
    calls = []
    for _ in range(max(1, min(32, math.ceil(ROTATE_BYTES / nbytes)))):
        a, b = (device.create_buffer(size=half, usage=wgpu.BufferUsage.STORAGE) for _ in range(2))
        calls.append([_calls(device, k, {"src": a, "dst": b}, None,
                             (max(1, min(65535, half // 16 // 256)), 1, 1))])
    return time_calls(calls, device)[0]


def fma_peak(device, f16: bool, quick: bool) -> float:
    """FLOP/s (2 per FMA) of independent vec4 FMA chains: the arithmetic ceiling for matmul."""
    import wgpu

    iters = 256 if quick else 2048
    src = (FMA_WGSL.replace("{{ENABLE}}", "enable f16;" if f16 else "")
           .replace("{{T}}", "f16" if f16 else "f32").replace("{{ITERS}}", str(iters)))
    k = _raw_pipeline(device, src, "fma16" if f16 else "fma32")
    nwg = 64 if quick else 4096
    out = device.create_buffer(size=nwg * 256 * 4, usage=wgpu.BufferUsage.STORAGE)
    call = _calls(device, k, {"out": out}, None, (nwg, 1, 1))
    t, _ = time_calls([[call]], device)
    return nwg * 256 * iters * 8 * 4 * 2 / t


# ---- weights on the GPU ----
def row_blocks(fmt: str, rows: int, cols: int, max_part: int = MAX_PART) -> list[tuple[int, int]]:
    """(row_start, rows) blocks whose every part fits one binding of ``max_part`` bytes."""
    from modelfmt.formats import PART_NAMES, part_nbytes

    per_row = max(part_nbytes(fmt, p, 1, cols) for p in PART_NAMES[fmt])
    n = max(1, max_part // per_row)
    return [(r0, min(n, rows - r0)) for r0 in range(0, rows, n)]


def _random_parts(rng, fmt: str, rows: int, cols: int, prefix: str = "w_") -> dict:
    """Packed random weights (valid f16 scales) without the cost of quantizing floats."""
    import numpy as np

    from modelfmt.formats import PART_NAMES, part_nbytes

    out = {}
    for p in PART_NAMES[fmt]:
        nb = part_nbytes(fmt, p, rows, cols)
        if p == "sb":   # K-quant records: random words, finite f16 super-block scales
            from modelfmt.formats import SB_WORDS
            rec = rng.integers(0, 2**32, (nb // 4 // SB_WORDS[fmt], SB_WORDS[fmt]), dtype=np.uint32)
            col, h = (4, (0.0005, 0.0)) if fmt == "q6_k" else (0, (0.002, 0.001))
            f = np.array(h, np.float16).view(np.uint16).astype(np.uint32)
            rec[:, col] = f[0] | (f[1] << 16)
            out[prefix + p] = rec.tobytes()
        elif p in ("scales", "mins") or fmt == "f16":
            h = (rng.standard_normal(nb // 2) * 0.02).astype(np.float16)
            out[prefix + p] = h.tobytes()
        elif fmt == "f32":
            out[prefix + p] = rng.standard_normal(nb // 4).astype(np.float32).tobytes()
        else:
            out[prefix + p] = rng.integers(0, 2**32, nb // 4, dtype=np.uint32).tobytes()
    return out


def _weight_copies(device, rng, fmt, rows, cols, prefixes=("w_",)):
    """GPU copies of one weight (per row block) so that a pass touches >= ROTATE_BYTES."""
    blocks = row_blocks(fmt, rows, cols)
    host = [{k: v for p in prefixes for k, v in _random_parts(rng, fmt, n, cols, p).items()}
            for _, n in blocks]
    nbytes = sum(len(v) for h in host for v in h.values())
    copies = max(1, min(32, math.ceil(ROTATE_BYTES / nbytes)))
    return blocks, [[harness.make_buffers(h, device) for h in host] for _ in range(copies)], nbytes


# ---- benchmarks ----
def bench_matvec(device, caps, fmt, rows, cols, rng, op="matvec", memo: dict | None = None,
                 **knobs) -> dict:
    """One decode kernel's time over rotated weight copies; ``memo`` (a dict) keeps the copies
    for the next call on the same (op, fmt, shape) (sweeps: the upload is most of a call)."""
    import numpy as np

    key = (op, fmt, rows, cols)
    if memo is not None and key in memo:
        blocks, copies, wbytes = memo[key]
    else:
        if memo is not None:
            memo.clear()   # one shape's copies (up to ROTATE_BYTES) on the GPU at a time
        blocks, copies, wbytes = _weight_copies(
            device, rng, fmt, rows, cols, ("w1_", "w3_") if op == "gate_up" else ("w_",))
        if memo is not None:
            memo[key] = blocks, copies, wbytes
    x = harness.make_buffers({"x": rng.standard_normal(cols).astype(np.float32),
                              "xq": max(16, (cols // 32) * XQ_WORDS * 16)}, device)
    t_xq = None
    if knobs.get("xq"):   # x quantized once by quant_x (timed on its own: once per x a step)
        kq = kernel("quant_x", caps, fmt=fmt, cols=cols, nb=1)
        t_xq = time_calls([[_calls(device, kq, x, {"n_tok": 1}, kq.grid())]], device)[0]
    calls = []
    for c in copies:
        # an output per weight copy: consecutive calls share no written buffer, so the pass
        # measures the kernel's throughput, not the barrier between dependent dispatches
        io = {**x, **harness.make_buffers({"y": rows * 4, "act": rows * 4}, device)}
        it = []
        for (r0, n), wb in zip(blocks, c):
            if op == "gate_up":
                k = kernel("gate_up", caps, fmt=fmt, ffn=n, hidden=cols, decode=1, **knobs)
                it.append(_calls(device, k, {**wb, **io}, {"n_tok": 1}, k.grid()))
            else:
                k = kernel("matvec", caps, fmt=fmt, rows=n, cols=cols, **knobs)
                it.append(_calls(device, k, {**wb, **io}, {"row_offset": r0}, k.grid()))
        calls.append(it)
    t, src = time_calls(calls, device)
    moved = wbytes + 4 * cols + 4 * rows
    return {"kernel": k.slug, "op": op, "fmt": fmt, "shape": f"{rows}x{cols}", "blocks": len(blocks),
            "secs": t, "gbs": moved / t / 1e9, "timer": src, "quant_x_secs": t_xq}


def bench_matmul(device, caps, fmt, rows, cols, m, rng, **knobs) -> dict:
    import numpy as np

    blocks, copies, wbytes = _weight_copies(device, rng, fmt, rows, cols)
    io = harness.make_buffers({"x": rng.standard_normal((m, cols)).astype(np.float32),
                               "y": m * rows * 4}, device)
    calls = []
    for c in copies:
        it = []
        for (r0, n), wb in zip(blocks, c):
            # each row block writes its own (m, n) slab: the driver concatenates per block
            k = kernel("matmul", caps, fmt=fmt, rows=n, cols=cols, **knobs)
            it.append(_calls(device, k, {**wb, **io}, {"n_tok": m}, k.grid(n_tok=m)))
        calls.append(it)
    t, src = time_calls(calls, device, min_secs=0.1)
    moved = wbytes + 4 * m * cols + 4 * m * rows
    return {"kernel": k.slug, "op": "matmul", "fmt": fmt, "shape": f"{rows}x{cols} M={m}",
            "blocks": len(blocks), "secs": t, "gbs": moved / t / 1e9,
            "flops": 2.0 * m * rows * cols / t, "f16": k.key.f16, "timer": src}


def torch_times(rows, cols, m) -> dict:
    """torch CUDA: f16 GEMV and bf16 GEMM (tensor cores) on the same shapes, in seconds."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}

    def timed(fn, n=50):
        fn()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / n / 1e3

    dev = "cuda"
    ws = [torch.randn(rows, cols, device=dev, dtype=torch.float16) for _ in range(
        max(1, min(16, math.ceil(ROTATE_BYTES / (rows * cols * 2)))))]
    x = torch.randn(cols, device=dev, dtype=torch.float16)
    it = iter(range(10**9))
    gemv = timed(lambda: torch.mv(ws[next(it) % len(ws)], x))
    wb = ws[0].to(torch.bfloat16)
    xm = torch.randn(m, cols, device=dev, dtype=torch.bfloat16)
    gemm = timed(lambda: xm @ wb.T, 20)
    src = torch.randn(256 * MIB, device=dev, dtype=torch.float16)  # 512 MiB
    dst = torch.empty_like(src)
    copy = timed(lambda: dst.copy_(src), 20)
    return {"gemv_f16": gemv, "gemm_bf16": gemm, "copy_gbs": 2 * src.numel() * 2 / copy / 1e9}


def tune(device, caps, rng, say, shapes) -> None:
    """Workgroup size x rows per workgroup sweep of the q4_0 decode kernel (the defaults'
    evidence; the f16 sweep of 2026-11-22 is in docs/PERFORMANCE.md)."""
    for fmt in ("q4_0",):
        for r, c in shapes:
            cells = []
            for wg in (64, 128, 256):
                for rr in (1, 2, 4, 8):
                    res = bench_matvec(device, caps, fmt, r, c, rng, wg=wg, r=rr)
                    cells.append(f"wg{wg}/r{rr}: {res['gbs']:.0f}")
            say(f"tune matvec {fmt} {r}x{c} GB/s: " + ", ".join(cells))


def tune_unpack(device, caps, rng, say, shapes) -> None:
    """q4_0 decode with the default (shift) and the shift-free (mask) nibble unpacking."""
    for r, c in shapes:
        a = bench_matvec(device, caps, "q4_0", r, c, rng)
        b = bench_matvec(device, caps, "q4_0", r, c, rng, unpack=1)
        say(f"tune matvec q4_0 {r}x{c} GB/s: shift {a['gbs']:.4g} ({a['kernel']}), "
            f"mask {b['gbs']:.4g} ({b['kernel']})")


def tune_matmul(device, caps, rng, say, shapes, m) -> None:
    """q4_0 prefill with 4 (default) and 8 tokens per thread."""
    for r, c in shapes:
        a = bench_matmul(device, caps, "q4_0", r, c, m, rng)
        b = bench_matmul(device, caps, "q4_0", r, c, m, rng, mt=8)
        say(f"tune matmul q4_0 {r}x{c} M={m} TFLOP/s: mt4 {a['flops'] / 1e12:.4g} "
            f"({a['kernel']}), mt8 {b['flops'] / 1e12:.4g} ({b['kernel']})")


DECODE_SHAPES = FULL_SHAPES[:3] + [(2048, 2048), (2048, 8192), (128256, 2048)]
DECODE_FFN = [(14336, 4096), (8192, 2048)]   # gate_up (ffn, hidden) of the 8B / 1B shapes


def decode_shapes(quick: bool) -> tuple[list, list]:
    """(matvec (rows, cols), gate_up (ffn, hidden)) shapes of the decode sweeps."""
    return (QUICK_SHAPES, [(2048, 1024)]) if quick else (DECODE_SHAPES, DECODE_FFN)


def decode_unpack(device, caps, rng, say, quick: bool, roof: float) -> None:
    """Decode kernels only: q4_0 matvec and gate_up with each weight unpacking (0 shift, 1 mask,
    2 int8 x + dot4I8Packed, 3 int8 x + residual), on the 8B and 1B layer shapes and LM heads,
    then rows per workgroup for unpacking 3."""
    shapes, ffns = decode_shapes(quick)
    say("| op | shape | unpack | kernel | time (us) | GB/s | % copy roofline |")
    say("|---|---|---|---|---|---|---|")
    for op, lst in (("matvec", shapes), ("gate_up", ffns)):
        for r, c in lst:
            for fmt, u in (("q4_0", 0), ("q4_0", 1), ("q4_0", 2), ("q4_0", 3), ("q4_1", 0),
                           ("q4_1", 3), ("q8_0", 0), ("q8_0", 3), ("q4_k", 0), ("q4_k", 2),
                           ("q4_k", 3), ("q6_k", 0), ("q6_k", 2), ("q6_k", 3)):
                if fmt != "q4_0" and (r, c) not in (lst[0], lst[-1]):
                    continue
                res = bench_matvec(device, caps, fmt, r, c, rng, op=op, unpack=u)
                say(f"| {op} | {fmt} {r}x{c} | {u} | {res['kernel']} | {res['secs'] * 1e6:.1f} | "
                    f"{res['gbs']:.0f} | {100 * res['gbs'] / roof:.0f}% |")
    for op, lst, rs in (("matvec", shapes[:3] + shapes[4:5], (4, 8, 16)),
                        ("gate_up", ffns, (2, 4, 8))):
        for r, c in lst:
            cells = []
            for rr in rs:
                for wg in (0, 64):
                    res = bench_matvec(device, caps, "q4_0", r, c, rng, op=op, unpack=3, r=rr,
                                       wg=wg)
                    cells.append(f"{res['kernel'].split('_sg')[0]}: {res['gbs']:.0f}")
            say(f"rows per workgroup, {op} q4_0 {r}x{c} unpack 3, GB/s: " + ", ".join(cells))


def row_blocks_sweep(device, caps, rng, say, quick: bool, roof: float) -> None:
    """Decode matvec / gate_up with RB = 1, 2, 4 row blocks per workgroup (x loaded once for
    RB * R rows) and the ``auto_rb`` choice, q4_0 and q6_k: the evidence of matvec.auto_rb."""
    from .core import UnsupportedKernel

    shapes, ffns = decode_shapes(quick)
    say("| op | shape | RB = 1 | RB = 2 | RB = 4 | auto |")
    say("|---|---|---|---|---|---|")
    for op, lst in (("matvec", shapes), ("gate_up", ffns)):
        for r, c in lst:
            for fmt in ("q4_0", "q6_k"):
                cells = []
                for rb in (1, 2, 4):
                    try:
                        res = bench_matvec(device, caps, fmt, r, c, rng, op=op, rb=rb)
                    except UnsupportedKernel:
                        cells.append("-")
                        continue
                    cells.append(f"{res['secs'] * 1e6:.1f} us {100 * res['gbs'] / roof:.0f} %")
                res = bench_matvec(device, caps, fmt, r, c, rng, op=op)   # the default
                rb = res["kernel"].partition("_rb")[2] or "1"
                say(f"| {op} | {fmt} {r}x{c} | " + " | ".join(cells) + f" | RB = {rb} |")


def config_sweep(device, caps, rng, say, fmt: str, quick: bool, roof: float) -> None:
    """Decode matvec of ``fmt`` over rows per workgroup (R) x workgroup size x row blocks (RB)
    on the 8B / 1B layer shapes, and the int8-x unpackings 2 / 3 at the default config: the
    evidence behind a per-format choice of R / wg (the defaults were tuned on q4_0)."""
    from .core import UnsupportedKernel

    shapes, _ = decode_shapes(quick)
    memo: dict = {}
    for r, c in shapes[:5]:
        cells = []
        base = bench_matvec(device, caps, fmt, r, c, rng, memo=memo)
        cells.append(f"default {base['kernel'].split('_', 2)[-1]}: "
                     f"{100 * base['gbs'] / roof:.0f}")
        u2 = bench_matvec(device, caps, fmt, r, c, rng, memo=memo, unpack=2)
        cells.append(f"unpack2: {100 * u2['gbs'] / roof:.0f}")
        if fmt in XQ_FORMATS and caps.packed_dot:
            for rr, rb in ((8, 0), (8, 1), (8, 2), (16, 1), (4, 1)):
                try:
                    xq = bench_matvec(device, caps, fmt, r, c, rng, memo=memo, xq=1, r=rr, rb=rb)
                except UnsupportedKernel:
                    continue
                cells.append(f"xq r{rr}/rb{rb or 'auto'}: {100 * xq['gbs'] / roof:.0f} "
                             f"(quant_x {xq['quant_x_secs'] * 1e6:.1f} us)")
        for rr in (4, 8, 16):
            for wg in (0, 64, 256, 512):
                for rb in (1, 2):
                    try:
                        res = bench_matvec(device, caps, fmt, r, c, rng, memo=memo, r=rr,
                                           wg=wg, rb=rb)
                    except UnsupportedKernel:
                        continue
                    cells.append(f"r{rr}/wg{wg or 'auto'}/rb{rb}: {100 * res['gbs'] / roof:.0f}")
        say(f"sweep matvec {fmt} {r}x{c} % copy roofline: " + ", ".join(cells))
        memo.clear()


class Report:
    """What every bench script starts with: the harness device and its caps, a seeded rng, and
    ``say`` (print a line and keep it); ``save(out_file)`` writes the kept lines."""

    def __init__(self):
        import numpy as np
        self.dev = harness.get_device()
        self.caps = harness.caps_of(self.dev)
        self.rng = np.random.default_rng(0)
        self.lines: list[str] = []

    def say(self, s: str = "") -> None:
        print(s, flush=True)
        self.lines.append(s)

    def save(self, out_file: str | None) -> None:
        if out_file:
            with open(out_file, "w") as f:
                f.write("\n".join(self.lines) + "\n")


def main(quick: bool = False, vs_torch: bool = False, out_file: str | None = None,
         tune_: bool = False, decode: bool = False, row_blocks_: bool = False,
         sweep: str | None = None) -> int:
    rep = Report()
    dev, caps, rng, say = rep.dev, rep.caps, rep.rng, rep.say

    say(f"# shaders bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{harness.adapter_name(dev)}")
    say(f"caps: shader_f16={caps.shader_f16} subgroups={caps.subgroups} "
        f"timestamps={harness.has_timestamps(dev)}")
    roof = copy_roofline(dev, quick)
    peak32 = fma_peak(dev, False, quick)
    peak16 = fma_peak(dev, True, quick) if caps.shader_f16 else 0.0
    say(f"copy roofline: {roof['roofline_gbs']:.0f} GB/s (WGSL vec4 copy {roof['wgsl_copy_gbs']:.0f},"
        f" copy_buffer_to_buffer {roof['buffer_copy_gbs']:.0f}; read+write bytes)")
    say(f"FMA peak: f32 {peak32 / 1e12:.2f} TFLOP/s" +
        (f", f16 {peak16 / 1e12:.2f} TFLOP/s" if peak16 else ""))
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    m = 64 if quick else 512
    say("")
    if sweep:
        config_sweep(dev, caps, rng, say, sweep, quick, roof["roofline_gbs"])
        say(f"timer: {roof['timer']}")
        rep.save(out_file)
        return 0
    if decode or row_blocks_:
        (row_blocks_sweep if row_blocks_ else decode_unpack)(dev, caps, rng, say, quick,
                                                       roof["roofline_gbs"])
        say(f"timer: {roof['timer']}")
        rep.save(out_file)
        return 0
    say("| kernel | shape | blocks | time (us) | GB/s | % copy roofline | TFLOP/s | % FMA peak | torch (us) "
        "| copy of the same bytes (us / % roofline) |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    same = {}   # bytes moved -> seconds of the copy kernel moving them (copy_at_size)
    rows_out = []
    # the K-quants beside q4_0 (targets: q4_k decode >= 90 % of q4_0's tok/s, q6_k matvec >= 60 %
    # of the copy roofline), f16 as the byte-bound reference
    for fmt in ("q4_0", "q4_k", "q6_k", "f16"):
        for r, c in shapes:
            res = bench_matvec(dev, caps, fmt, r, c, rng)
            tt = torch_times(r, c, m) if vs_torch and fmt == "f16" else {}
            res["torch"] = tt.get("gemv_f16")
            rows_out.append(res)
            nb = round(res["gbs"] * 1e9 * res["secs"])
            if nb not in same:
                same[nb] = copy_at_size(dev, nb)
            say(f"| {res['kernel']} | {fmt} {res['shape']} | {res['blocks']} | "
                f"{res['secs'] * 1e6:.1f} | {res['gbs']:.0f} | "
                f"{100 * res['gbs'] / roof['roofline_gbs']:.0f}% | | | "
                f"{'' if res['torch'] is None else f'{res["torch"] * 1e6:.1f} (f16 mv)'} | "
                f"{same[nb] * 1e6:.1f} / {100 * nb / same[nb] / 1e9 / roof['roofline_gbs']:.0f}% |")
        if fmt in XQ_FORMATS and caps.packed_dot:   # the same kernel on quant_x's records
            for r, c in shapes:
                res = bench_matvec(dev, caps, fmt, r, c, rng, xq=1)
                say(f"| {res['kernel']} | {fmt} {res['shape']}, x by quant_x "
                    f"({res['quant_x_secs'] * 1e6:.1f} us once per x) | {res['blocks']} | "
                    f"{res['secs'] * 1e6:.1f} | {res['gbs']:.0f} | "
                    f"{100 * res['gbs'] / roof['roofline_gbs']:.0f}% | | | | |")
    for (r, c), fmt in [(s, f) for s in (shapes[1:2] if quick else [(14336, 4096)])
                        for f in ("q4_0", "q4_k")]:
        res = bench_matvec(dev, caps, fmt, r, c, rng, op="gate_up")
        say(f"| {res['kernel']} | {fmt} gate_up {r}x{c} (2 weights) | 1 | "
            f"{res['secs'] * 1e6:.1f} | {res['gbs']:.0f} | "
            f"{100 * res['gbs'] / roof['roofline_gbs']:.0f}% | | | | |")
    from dataclasses import replace

    variants = [caps, replace(caps, shader_f16=False)] if caps.shader_f16 else [caps]
    for (r, c), cv, fmt in ([(s, v, "q4_0") for s in shapes for v in variants]
                           + [(s, caps, "q4_k") for s in shapes]):
        res = bench_matmul(dev, cv, fmt, r, c, m, rng)
        peak = peak16 if res["f16"] else peak32
        tt = torch_times(r, c, m) if vs_torch and cv is caps and fmt == "q4_0" else {}
        tb = tt.get("gemm_bf16")
        say(f"| {res['kernel']} | {fmt} {res['shape']} | {res['blocks']} | "
            f"{res['secs'] * 1e6:.1f} | {res['gbs']:.0f} | | {res['flops'] / 1e12:.2f} | "
            f"{100 * res['flops'] / peak:.0f}% of {'f16' if res['f16'] else 'f32'} | "
            f"{'' if tb is None else f'{tb * 1e6:.1f} (bf16 mm)'} | |")
    if vs_torch:
        tt = torch_times(4096, 4096, m)
        if tt:
            say(f"torch copy (same GPU): {tt['copy_gbs']:.0f} GB/s")
        else:
            say("torch with CUDA not available: no torch column")
    if tune_:
        tune(dev, caps, rng, say, shapes[:1] + shapes[3:])
        tune_unpack(dev, caps, rng, say, shapes)
        tune_matmul(dev, caps, rng, say, shapes, m)
    say(f"timer: {roof['timer']}")
    rep.save(out_file)
    return 0
