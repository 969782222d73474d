"""Where a program's GPU time goes, on any backend (native ``python -m driver bench --profile`` and
the page's bench mode ``&profile=1``): each op's dispatches replayed alone and timed to completion.

Browser-safe (no numpy, no wgpu): it only submits ``driver.gpu.Program``s and awaits ``sync``, so
the same numbers come from wgpu-py natively and from Chromium's WebGPU in the page. On the page
the time of a replay includes what Chromium spends per dispatch outside the GPU (its GPU process,
Dawn's validation and barriers), which is part of what the page pays per token.
"""

from __future__ import annotations

import time

from . import gpu as g
from .plan import _DispatchStep


async def submit_ms(gpu: g.GPU, prog: g.Program, reps: int) -> float:
    """Milliseconds per submit of ``prog``: one warm-up submit, then ``reps`` back to back, timed
    to completion (kernel time does not depend on the values in the buffers). The one program
    timer of bench --profile, sweep, bench --speculative's pass costs and the page's profile."""
    gpu.submit(prog)
    await gpu.sync()
    t = time.perf_counter()
    for _ in range(reps):
        gpu.submit(prog)
    await gpu.sync()
    return 1e3 * (time.perf_counter() - t) / reps


def _group(step, by: str) -> str:
    """The row a dispatch step is counted in: its op, or (``by="shape"``) its op and weight shape
    (rows x cols where the kernel has them), so that e.g. wk / wv stand apart from wq."""
    key = step.kernel.key
    if by == "shape":
        d = dict(key.dims)
        if "r" in d and "c" in d:
            return f"{key.op} {d['r']}x{d['c']}"
        if "ffn" in d and "hidden" in d:
            return f"{key.op} {d['ffn']}x{d['hidden']}"
    return key.op


async def op_profile(eng, rec, rt: dict, reps: int, by: str = "op") -> list[tuple[str, int, float]]:
    """(group, dispatches, ms) per op (``by="shape"``: per op and weight shape) of recorder
    ``rec`` at runtime ``rt``, and ("all", n, ms): each group's dispatches replayed alone (same
    grids, bind groups and uniforms) ``reps`` times and timed to completion. Kernel timing does not
    depend on the values in the buffers, so the parts add up to about the whole; the rest is the
    dependency barriers between ops (and each replay's own fixed cost, ~0.07 ms on an H200)."""
    rec.write_uniforms(rt)
    # the steps the program replays at rt (a Span-conditioned step outside its range does not)
    steps = [s for s in rec.steps if isinstance(s, _DispatchStep)
             and (s.when is None or s.when(rt))]
    groups: dict[str, list] = {}
    for s in steps:
        groups.setdefault(_group(s, by), []).append(s)

    async def timed(sel) -> float:
        prog = g.Program()
        for s in sel:
            prog.dispatch(s.pipeline, s.bind_group, s.grid(rt), s.kernel.slug)
        return await submit_ms(eng.gpu, prog, reps)

    out = [("all", len(steps), await timed(steps))]
    for name, sel in sorted(groups.items()):
        out.append((name, len(sel), await timed(sel)))
    return out


async def engine_profile(eng, n_prompt: int = 512, ctx: int = 128, reps_prefill: int = 3,
                         reps_decode: int = 20, by: str = "shape") -> dict:
    """{"prefill": rows, "decode": rows} (``op_profile`` rows as lists) of a prefill chunk of
    ``n_prompt`` tokens at position 0 and a decode step at context ``ctx``, on ``eng``'s own
    programs. Overwrites the engine's uniforms: run it between requests, not during one."""
    from .sampler import Sampling
    from .engine import BadOption
    if not 1 <= n_prompt <= eng.graph.chunk or not 1 <= ctx < eng.max_context:
        raise BadOption(f"profile: prompt must be in [1, {eng.graph.chunk}] and ctx in "
                        f"[1, {eng.max_context - 1}], got {n_prompt} / {ctx}")
    samp = Sampling().runtime(eng.cfg.vocab_size)
    pre = await op_profile(eng, eng.graph.prefill, eng._rt(samp, 0, n_prompt, 0), reps_prefill, by)
    dec = await op_profile(eng, eng.graph.decode, eng._rt(samp, ctx, 1, 1), reps_decode, by)
    eng.kv_ids = []   # the replays wrote K/V rows: nothing cached is valid any more
    return {"prompt": n_prompt, "ctx": ctx, "by": by,
            "prefill": [list(r) for r in pre], "decode": [list(r) for r in dec]}
