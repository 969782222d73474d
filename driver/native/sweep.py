"""``python -m driver sweep MODEL...``: decode candidates measured on ONE loaded model per shape,
in one process, beside the copy roofline of the same run. Native only.

A candidate is a ``DecodeOptions`` (short-context one-pass attention and its threshold / tile,
the final RMSNorm fused into the LM head or not, decode kernel knobs: rows per workgroup,
unpacking, attention tile) plus a pipelining depth. Every candidate computes the same function
(round-off aside: ``tests/test_engine.py::test_decode_program_variants_agree``), so the fastest
can become the default. Per candidate and context: decode tokens/s (``depth`` steps in flight,
greedy, as ``python -m driver bench``), the GPU time of one decode program replayed alone
(``gpu_ms``: no readback, no CPU in the way), dispatches per token, and the weight bandwidth as
a share of the copy roofline. Candidates are measured in interleaved rounds (best of
``--rounds``), so a clock or thermal drift hits all of them alike.

``--count-only``: dispatches per token of each candidate without running anything (a null GPU
with the local adapter's capabilities records the programs, the adapter compiles every
pipeline: big shapes in seconds, no GPU memory, every candidate's kernels validated).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace

from driver import gpu as g
from driver.decode_options import NATIVE
from driver.graph import DecodeOptions
from driver.loader import ModelError
from driver.sampler import BadOption, Sampling

from .bench import decode_speed, rooflines, submit_ms



def candidates(quick: bool = False) -> list[tuple[str, DecodeOptions, int]]:
    """(name, options, depth) of every candidate; the first is the native default."""
    K = DecodeOptions.knobs_of
    D = DecodeOptions()
    out = [("native default", NATIVE, 3),   # split-K attention always, head norm apart
           ("native, x quantized per kernel", replace(NATIVE, xq=False), 3),   # no quant_x
           ("native, quant_x, R = 8", replace(NATIVE, knobs=K({op: {"r": 8} for op in (
               "matvec", "head", "gate_up", "qkv_rope_decode")})), 3),
           ("page default", D, 3),     # fewest dispatches
           ("page, x quantized per kernel", DecodeOptions(xq=False), 3),
           ("page, quant_x for every input", DecodeOptions(xq_min_weights=0), 3),
           ("depth 2", D, 2), ("depth 4", D, 4),
           ("short off", DecodeOptions(short_ctx=0), 3),
           ("head norm separate", DecodeOptions(head_norm=False), 3),
           ("short<=256 tile 128", DecodeOptions(short_ctx=256, short_wg=128), 3),
           ("short<=256 tile 256", DecodeOptions(short_ctx=256), 3),
           ("short<=1024 tile 256", DecodeOptions(short_ctx=1024), 3)]
    if quick:
        return out
    out += [("matvec r=4", DecodeOptions(knobs=K({"matvec": {"r": 4}})), 3),
            ("matvec r=2", DecodeOptions(knobs=K({"matvec": {"r": 2}})), 3),
            ("head r=4", DecodeOptions(knobs=K({"head": {"r": 4}})), 3),
            ("head r=16", DecodeOptions(knobs=K({"head": {"r": 16}})), 3),
            ("gate_up r=4", DecodeOptions(knobs=K({"gate_up": {"r": 4}})), 3),
            ("qkv r=4", DecodeOptions(knobs=K({"qkv_rope_decode": {"r": 4}})), 3),
            ("weights unpack=1 (exact, mask)",
             DecodeOptions(knobs=K({op: {"unpack": 1} for op in
                                    ("matvec", "head", "gate_up", "qkv_rope_decode")})), 3),
            ("weights unpack=0 (exact, shift)",
             DecodeOptions(knobs=K({op: {"unpack": 0} for op in
                                    ("matvec", "head", "gate_up", "qkv_rope_decode")})), 3),
            ("split-K attention tile 64", DecodeOptions(knobs=K({"attention_decode":
                                                                 {"wg": 64}})), 3),
            ("split-K attention tile 256", DecodeOptions(knobs=K({"attention_decode":
                                                                  {"wg": 256}})), 3)]
    return out


def select(cands: list, names: list[str] | None) -> list:
    if not names:
        return cands
    known = {c[0]: c for c in cands}
    bad = [n for n in names if n not in known]
    if bad:
        raise BadOption(f"unknown candidate(s) {bad}; known: {list(known)}")
    return [known[n] for n in names]


async def program_gpu_ms(eng, ctx: int, reps: int) -> float:
    """Milliseconds of GPU per decode program at context ``ctx``: the program replayed ``reps``
    times back to back (same uniforms; kernel time does not depend on the values)."""
    G = eng.graph
    rt = eng._rt(Sampling().runtime(eng.cfg.vocab_size), ctx - 1, 1, 1)
    G.decode.write_uniforms(rt)
    return await submit_ms(eng.gpu, G.decode.program(rt), reps)


def sweep_model(model, cands, ctxs: list[int], n: int, rounds: int, quick: bool,
                log=None, backend=None) -> dict:
    """Load ``model`` once, measure the copy roofline, then every candidate at every context in
    ``rounds`` interleaved rounds. Returns the result dict (rows: best of the rounds)."""
    from driver.native import load
    t0 = time.perf_counter()
    eng = load(model, backend=backend, max_context=max(ctxs) + n + 8, chunk=64)
    res = {"model": str(model), "adapter": eng.gpu.info.get("description", ""),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "ctxs": ctxs, "tokens": n,
           "rounds": rounds, "weight_bytes_per_token": eng.weight_bytes_per_token,
           "load_s": time.perf_counter() - t0}
    # the 512 MiB copy needs a binding that large (lavapipe allows 128 MiB): else the quick one
    small = eng.gpu.limits.get("max_storage_buffer_binding_size", 0) < (512 << 20)
    res.update(rooflines(eng.gpu, quick or small, False))
    rows = [{"name": name, "depth": depth, "options": _opts_json(o), "samples": {}}
            for name, o, depth in cands]
    reps = 5 if quick else 20

    async def go():
        for rnd in range(rounds):
            for row, (name, opts, depth) in zip(rows, cands):
                if "error" in row:
                    continue
                try:
                    eng.set_decode(opts)
                except (g.GPUError, ModelError, ValueError) as e:
                    # a knob this GPU cannot build (or compile): said in the row, the rest go on
                    row["error"] = f"{type(e).__name__}: {e}"
                    if log:
                        log(f"  {name}: {row['error']}")
                    continue
                for c in ctxs:
                    s = row["samples"].setdefault(str(c), {"tok_s": [], "gpu_ms": []})
                    s["tok_s"].append(await decode_speed(eng, c, n, depth))
                    s["gpu_ms"].append(await program_gpu_ms(eng, c + 1, reps))
                    row.setdefault("dispatches", {})[str(c)] = eng.dispatches_at(c + 1)
                if log:
                    log(f"  round {rnd + 1}/{rounds} {name}: " + ", ".join(
                        f"ctx {c} {row['samples'][str(c)]['tok_s'][-1]:.1f} tok/s"
                        for c in ctxs))

    try:
        eng._run(go())
    finally:
        eng.set_decode(DecodeOptions())
        eng.close()
    copy = res["copy_gb_s"]
    for row in rows:
        row["best"] = {}
        if "error" in row:
            continue
        for c, s in row["samples"].items():
            tok = max(s["tok_s"])
            row["best"][c] = {"tok_s": tok, "gpu_ms": min(s["gpu_ms"]),
                              "weight_share_of_copy":
                                  eng.weight_bytes_per_token * tok / 1e9 / copy}
    res["rows"] = rows
    res["total_s"] = time.perf_counter() - t0
    return res


def _opts_json(o: DecodeOptions) -> dict:
    d = asdict(o)
    d["knobs"] = {op: dict(kv) for op, kv in o.knobs}
    return d


def format_table(r: dict) -> str:
    ctxs = [str(c) for c in r["ctxs"]]
    base = r["rows"][0]["best"]
    lines = [f"# driver sweep {r['model']} on {r['adapter']}, {r['date']}: {r['tokens']} tokens, "
             f"best of {r['rounds']} rounds; copy roofline {r['copy_gb_s']:.1f} GB/s; weights "
             f"{r['weight_bytes_per_token'] / 1e6:.1f} MB/token; load {r['load_s']:.1f} s, "
             f"total {r['total_s']:.1f} s"]
    head = f"{'candidate':<46} {'d':>1}"
    for c in ctxs:
        head += f" | ctx {c:>5}: {'tok/s':>8} {'x def':>5} {'GPU ms':>7} {'disp':>4} {'%copy':>5}"
    lines.append(head)
    for row in r["rows"]:
        line = f"{row['name'][:46]:<46} {row['depth']:>1}"
        if "error" in row:
            lines.append(line + " | not run: " + row["error"][:200])
            continue
        for c in ctxs:
            b = row["best"][c]
            line += (f" | {'':>10} {b['tok_s']:8.1f} {b['tok_s'] / base[c]['tok_s']:5.3f} "
                     f"{b['gpu_ms']:7.3f} {row['dispatches'][c]:>4} "
                     f"{100 * b['weight_share_of_copy']:5.1f}")
        lines.append(line)
    return "\n".join(lines) + "\n"


# ---- dispatch counts without running ----
class CountingGPU(g.GPU):
    """A GPU that runs nothing: buffers and bind groups are placeholders, work is dropped, and
    pipelines are compiled by ``compiler`` (a real backend: every kernel of every candidate is
    validated for these exact shapes) or not at all. With the ``caps`` / ``limits`` /
    ``features`` of a real adapter the engine builds exactly the programs it would build there."""

    def __init__(self, caps, limits: dict, features, info: dict, compiler=None):
        self.caps, self.limits, self.features = caps, dict(limits), frozenset(features)
        self.info = {**info, "description": info.get("description", "") + " (count only)"}
        self.compiler = compiler

    def create_buffer(self, size: int, kind: str, label: str = ""):
        g.check_kind(kind)
        return ("buffer", label, size)

    def write_buffer(self, buf, offset: int, data) -> None:
        pass

    def create_pipeline(self, kernel):
        if self.compiler is not None:
            self.compiler.create_pipeline(kernel)   # raises ShaderError naming the kernel
        return ("pipeline", kernel.slug)

    def create_bind_group(self, pipeline, kernel, entries: dict):
        return ("bind_group", tuple(self.bind_entries(kernel, entries)))

    def submit(self, program) -> None:
        pass

    async def read(self, buf, offset: int, size: int) -> bytes:
        return bytes(size)

    async def map_read(self, buf, offset: int, size: int) -> bytes:
        return bytes(size)

    async def sync(self) -> None:
        pass


def count_model(model, cands, ctxs: list[int], backend=None, compile: bool = True) -> dict:
    """Dispatches per decode token of every candidate at every context, and the ops of the
    default program, from a CountingGPU with the local adapter's capabilities (``compile``:
    its pipelines compiled there too)."""
    from driver.native import load
    if backend is None:
        from .backend_wgpu import WgpuBackend
        backend = WgpuBackend.create_sync()
    null = CountingGPU(backend.caps, backend.limits, backend.features, backend.info,
                       backend if compile else None)
    eng = load(model, backend=null, max_context=max(ctxs) + 8, chunk=64)
    res = {"model": str(model), "adapter": null.info["description"], "ctxs": ctxs, "rows": []}
    try:
        for name, opts, depth in cands:
            if depth != 3:
                continue   # depth does not change the program
            eng.set_decode(opts)
            row = {"name": name, "dispatches": {str(c): eng.dispatches_at(c) for c in ctxs}}
            ops: dict = {}
            for c in ctxs:
                prog = eng.graph.decode.program({"ctx": c, "pos": c - 1, "n_tok": 1})
                per: dict = {}
                for op in prog.ops:
                    if isinstance(op, g.Dispatch):
                        per[_op_of(op.label)] = per.get(_op_of(op.label), 0) + 1
                ops[str(c)] = per
            row["ops"] = ops
            res["rows"].append(row)
    finally:
        eng.close()
    return res


def _op_of(slug: str) -> str:
    """The op of a kernel slug (the one-pass attention and the fused-norm LM head named)."""
    from driver.graph import OPS
    op = max((op for op in OPS if slug.startswith(op + "_")), key=len, default=slug)
    if op == "attention_decode" and "_dir1" in slug:
        return op + " (one pass)"
    if op == "matvec" and "_n" in slug.rsplit("_acc", 1)[-1]:
        return op + " (+RMSNorm)"
    return op


def format_counts(r: dict) -> str:
    lines = [f"# dispatches per decode token, {r['model']} ({r['adapter']})"]
    for row in r["rows"]:
        lines.append(f"{row['name'][:46]:<46} " + "  ".join(
            f"ctx {c}: {n}" for c, n in row["dispatches"].items()))
    first = r["rows"][0]
    for c, per in first["ops"].items():
        lines.append(f"  {first['name']} at ctx {c}: " + ", ".join(
            f"{op} {n}" for op, n in sorted(per.items(), key=lambda x: -x[1])))
    return "\n".join(lines) + "\n"


def run_sweep(models, quick: bool = False, out_path=None, ctxs=None, tokens: int | None = None,
              rounds: int | None = None, names=None, count_only: bool = False,
              as_json: bool = False, out=sys.stdout, err=sys.stderr) -> list[dict]:
    """The ``python -m driver sweep`` entry point: every model in turn (one process), a table
    per model to ``out`` (or JSON lines), everything to ``out_path`` as one JSON document."""
    cands = select(candidates(quick), names)
    ctxs = ctxs or ([16, 600] if quick else [128, 384, 4096])
    n = tokens or (8 if quick else 96)
    rounds = rounds or (2 if quick else 3)
    results = []
    for m in models:
        if count_only:
            r = count_model(m, cands, sorted(set([1] + list(ctxs))))
            text = format_counts(r)
        else:
            r = sweep_model(m, cands, list(ctxs), n, rounds, quick,
                            log=lambda s: (err.write(s + "\n"), err.flush()))
            text = format_table(r)
        results.append(r)
        out.write(json.dumps(r) + "\n" if as_json else text)
        out.flush()
        if out_path:   # rewritten after each model: a later failure keeps the earlier ones
            _write_atomic(out_path, json.dumps(results, indent=1) + "\n")
    return results


def _write_atomic(path, text: str) -> None:
    """Write through a temporary file and a rename: never a half-written result file."""
    import os
    from pathlib import Path
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)
