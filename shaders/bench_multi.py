"""Small-M kernel sweep (``python -m shaders bench --multi [--full] [--quick]``): matvec_multi /
gate_up_multi (shaders/multi.py, the verify pass of speculative decoding) against one decode matvec
of the same weight, over candidate variants, to pick the defaults (``multi.MULTI_TUNED`` /
``MULTI_TUNED_XQ``).

Default (``sweep_default``, about a minute on an H200): the layer weights of the 1B and 8B presets
(modelfmt.presets), n in ``DEFAULT_NS`` (nb = the power of two >= n), the kernels the verify body
runs on this device (x pre-quantized by quant_x where it builds, as driver.graph.VERIFY_XQ does;
else the self-quantizing ones) at their default and the few (wg, r) of ``DEFAULT_CANDS`` (around
the best measured: 5 rows on 4096 x 4096, wg 64 x r 8 26.0 us vs the default 128 x 4 34.0 us, H200
2026-12-03), candidates skipped past ``BUDGET_S`` seconds (said so). It ends with the
``MULTI_TUNED_XQ = {...}`` (or ``MULTI_TUNED``) line to paste into shaders/multi.py.
``--full``: the whole sweep below (it did not finish within 330 s on an H200).

Why: a verify pass over k + 1 = 5 rows of the 8B shape cost 5.4 decode steps on the H200 where
~1.2-1.5 are possible (decode reads 4.2 GB of weights a step; 5 rows re-use each byte). The suspects
are per-token work that does not shrink with the rows per workgroup: the int8 quantization of x's
chunk (per token, per chunk, per workgroup: total ~ rows / R), and the subgroup reduction of
nb * R * weights sums per thread (total ~ rows * nb * WG, whatever R).

``--full``, per shape (the 8B layer's weights and its LM head, ``SHAPES``; ``--quick``: small shapes for CPU
adapters) and per pass size n in ``NS`` (the body is compiled for nb = the power of two >= n, as
driver.speculative does):
  decode      the decode kernel (matvec / gate_up decode=1): ``1 step`` of this weight
  default     multi's default (wg from the decode loop, R from ACC_BUDGET)
  wg W r R    the workgroup size x rows per workgroup grid (``GRID_WG`` x ``GRID_R``), reduced
              by subgroupAdd; ``tree``: by the shared-memory tree (``TREE_WG`` x ``TREE_R``)
  exact nb    (n = 5) the body compiled for nb = n instead of the power of two
  unpack 0    (n = 5) exact f32 x (no per-chunk int8 quantization) at the default and the best
              (wg, r): changes verify numerics against decode's int8 x (see multi.py)
  xq          x pre-quantized once by quant_x (its own time on its own line, ``quant_x``), at the
              default and the best (wg, r, sg), and the subgroup (wg, r <= 8) grid with xq for n = 5
              (the driver's verify body uses xq where it can: graph.VERIFY_XQ)
Each line: microseconds a call and ``x dec`` = time / one decode call (n rows for the price of
``x dec`` decode matvecs; < n is a gain over n decode steps, ~1 the bandwidth limit).
Then per n: the 8B layer's projections (wq, wk, wv, wo, w1+w3, w2) summed with default and best
variants against decode's (``layer n=5: ...``), and the ``MULTI_TUNED = {...}`` and
``MULTI_TUNED_XQ = {...}`` lines to paste into shaders/multi.py (entries whose best beats the
default by > 3 %). Native only (numpy, wgpu).
"""

from __future__ import annotations

import time

from . import harness
from .bench import _calls, _weight_copies, row_blocks, time_calls
from .core import UnsupportedKernel
from .registry import kernel

# (op, rows, cols, name, uses per 8B layer): (ffn, hidden) for gate_up
SHAPES = [("matvec_multi", 4096, 4096, "wq/wo", 2), ("matvec_multi", 1024, 4096, "wk/wv", 2),
          ("gate_up_multi", 14336, 4096, "w1+w3", 1), ("matvec_multi", 4096, 14336, "w2", 1),
          ("matvec_multi", 128256, 4096, "LM head", 0)]
QUICK_SHAPES = [("matvec_multi", 512, 512, "q", 2), ("gate_up_multi", 1024, 512, "gate_up", 1),
                ("matvec_multi", 512, 1024, "down", 1)]
NS = (2, 3, 5, 9)
GRID_WG = (32, 64, 128, 256)
GRID_R = (1, 2, 4, 8, 16)
TREE_WG = (64, 128, 256)
TREE_R = (2, 4, 8)
MAIN_N = 5                    # k = 4: the full grid; other n get GRID_R[:4]
TUNE_GAIN = 0.97              # a MULTI_TUNED entry only where best < 0.97 x default
DEFAULT_PRESETS = ("llama3-8b-shape", "llama3.2-1b-shape")
DEFAULT_NS = (2, 5, 9)
# (wg, r) candidates of the default sweep, most promising first (see the docstring)
DEFAULT_CANDS = ((64, 8), (64, 4), (128, 8), (32, 8), (128, 4), (256, 4))
# quant_x dispatches a layer per weight: xn once for wq / wk / wv, attn for wo, xn for w1 + w3, act
QX_PER_LAYER = {"wq/wo": 2, "wk/wv": 0, "w1+w3": 1, "w2": 1}
BUDGET_S = 60.0               # default sweep: candidates past this many seconds are skipped


def pow2(n: int) -> int:
    nb = 2
    while nb < n:
        nb *= 2
    return nb


class Shape:
    """One weight on the GPU (row blocks x rotated copies) with x (16, cols) and per-copy outputs."""

    def __init__(self, dev, rng, op, rows, cols, fmt="q4_0"):
        import numpy as np
        self.dev, self.op, self.rows, self.cols, self.fmt = dev, op, rows, cols, fmt
        gate = op == "gate_up_multi"
        self.prefixes = ("w1_", "w3_") if gate else ("w_",)
        self.blocks, self.copies, self.wbytes = _weight_copies(dev, rng, fmt, rows, cols,
                                                               self.prefixes)
        x = (rng.standard_normal((16, cols)) / np.sqrt(cols)).astype(np.float32)  # (16, cols)
        self.x = harness.make_buffers({"x": x, "xq": 16 * (cols // 32) * 80}, dev)
        # (16, rows) f32 per copy: consecutive calls share no written buffer
        self.outs = [harness.make_buffers({"y": 64 * rows, "act": 64 * rows}, dev)
                     for _ in self.copies]

    def first(self, caps, nb: int, **knobs):
        """The multi kernel of the first row block (its slug names the variant)."""
        nrows = self.blocks[0][1]
        dims = ({"ffn": nrows, "hidden": self.cols} if self.op == "gate_up_multi"
                else {"rows": nrows, "cols": self.cols})
        return kernel(self.op, caps, fmt=self.fmt, nb=nb, **dims, **knobs)

    def time(self, caps, nb: int | None, n: int, **knobs) -> tuple[float, str]:
        """(seconds a call over every row block, slug of the first block's kernel); nb None:
        the decode kernel."""
        calls, slug = [], ""
        for c, io in zip(self.copies, self.outs):
            it = []
            for (r0, nrows), wb in zip(self.blocks, c):
                if nb is None:
                    if self.op == "gate_up_multi":
                        k = kernel("gate_up", caps, fmt=self.fmt, ffn=nrows, hidden=self.cols,
                                   decode=1)
                        par = {"n_tok": 1}
                    else:
                        k = kernel("matvec", caps, fmt=self.fmt, rows=nrows, cols=self.cols)
                        par = {"row_offset": 0}
                else:
                    dims = ({"ffn": nrows, "hidden": self.cols} if self.op == "gate_up_multi"
                            else {"rows": nrows, "cols": self.cols})
                    k = kernel(self.op, caps, fmt=self.fmt, nb=nb, **dims, **knobs)
                    par = {"n_tok": n}
                slug = slug or k.slug
                it.append(_calls(self.dev, k, {**wb, **self.x, **io}, par, k.grid()))
            calls.append(it)
        t, _ = time_calls(calls, self.dev, min_secs=0.02)
        return t, slug


def sweep(dev, caps, rng, say, quick: bool = False) -> dict:
    """The table above; returns {(op, rows, cols, nb): (wg, r)} of the winners."""
    shapes = QUICK_SHAPES if quick else SHAPES
    ns, gwg, gr = ((2, MAIN_N), GRID_WG[:2], GRID_R[:3]) if quick else (NS, GRID_WG, GRID_R)
    tuned: dict = {}
    tuned_xq: dict = {}
    layer = {n: {"dec": 0.0, "default": 0.0, "best": 0.0} for n in ns}
    say("| op | shape | n | nb | variant | kernel | us | x dec |")
    say("|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for op, rows, cols, name, uses in shapes:
        sh = Shape(dev, rng, op, rows, cols)
        label = f"{name} {rows}x{cols}"
        dec, slug = sh.time(caps, None, 1)
        say(f"| decode | {label} | 1 | - | decode | {slug} | {dec * 1e6:.1f} | 1.00 |")

        seen: set = set()

        def line(n, nb, variant, **knobs):
            """(seconds, (wg, r, sg) as built) or None (unsupported, or a variant already
            timed: the builder clamps r / wg to the workgroup storage limit)."""
            try:
                k = sh.first(caps, nb, **knobs)
                if (n, k.slug) in seen:
                    return None
                seen.add((n, k.slug))
                t, slug = sh.time(caps, nb, n, **knobs)
            except UnsupportedKernel as e:
                say(f"| {op} | {label} | {n} | {nb} | {variant} | unsupported: {e} | | |")
                return None
            say(f"| {op} | {label} | {n} | {nb} | {variant} | {slug} | {t * 1e6:.1f} | "
                f"{t / dec:.2f} |")
            return t, (k.workgroup_size[0], k.meta["rows_per_wg"], int(k.key.subgroups))

        for n in ns:
            nb = pow2(n)
            base, dk = line(n, nb, "default")
            best, best_k = base, dk
            cands = [(wg, r, 1) for wg in gwg for r in (gr if n == MAIN_N else gr[1:4])]
            if n == MAIN_N:   # the tree reduction: n = 5 only (time)
                cands += [(wg, r, 0) for wg in TREE_WG[:2 if quick else 3] for r in TREE_R]
            nw = 2 if op == "gate_up_multi" else 1
            # registers: at most 128 accumulators (64 off the main n), else compile time and spills
            cands = [c for c in cands if nb * c[1] * nw <= (128 if n == MAIN_N else 64)]
            for wg, r, sg in cands:
                got = line(n, nb, f"wg {wg} r {r}" + ("" if sg else " tree"), wg=wg, r=r, sg=sg)
                if got is not None and got[0] < best:
                    best, best_k = got
            if cols % 32 == 0:
                try:
                    kq = kernel("quant_x", caps, fmt="q4_0", cols=cols, nb=nb)
                    cq = [[_calls(dev, kq, {**sh.x}, {"n_tok": n}, kq.grid())]]
                    tq, _ = time_calls(cq, dev, min_secs=0.02)
                    say(f"| quant_x | {label} | {n} | {nb} | quant_x | {kq.slug} | "
                        f"{tq * 1e6:.1f} | {tq / dec:.2f} |")
                    bx = line(n, nb, "xq", xq=1)
                    if n == MAIN_N:   # padding: on lavapipe xq at nb 8 / n 5 was 18x nb 5
                        line(n, n, "xq exact nb", xq=1)
                    bq = line(n, nb, f"xq wg {best_k[0]} r {best_k[1]} sg {best_k[2]}", xq=1,
                              wg=best_k[0], r=best_k[1], sg=best_k[2])
                    xq_best = min([b for b in (bx, bq) if b], default=None,
                                  key=lambda b: b[0])
                    if n == MAIN_N:
                        for wg, r, sg in [c for c in cands if c[2] and 1 < c[1] < 16]:
                            got = line(n, nb, f"xq wg {wg} r {r}" + ("" if sg else " tree"),
                                       xq=1, wg=wg, r=r, sg=sg)
                            if got and (xq_best is None or got[0] < xq_best[0]):
                                xq_best = got
                    if xq_best and bx and xq_best[0] < TUNE_GAIN * bx[0]:
                        for _, nrows in sh.blocks:
                            tuned_xq[(op, nrows, cols, nb)] = xq_best[1]
                    if xq_best:
                        say(f"best xq {label} n={n} nb={nb}: wg {xq_best[1][0]} r "
                            f"{xq_best[1][1]} sg {xq_best[1][2]} {xq_best[0] * 1e6:.1f} us + "
                            f"quant_x {tq * 1e6:.1f} us = {(xq_best[0] + tq) / dec:.2f} x dec")
                        if uses:
                            layer[n]["xq"] = layer[n].get("xq", 0.0) + uses * xq_best[0]
                except UnsupportedKernel as e:
                    say(f"xq {label}: unsupported here ({e})")
            if n == MAIN_N:
                line(n, n, "exact nb")
                line(n, n, f"exact nb wg {best_k[0]} r {best_k[1]} sg {best_k[2]}",
                     wg=best_k[0], r=best_k[1], sg=best_k[2])
                line(n, nb, "unpack 0", unpack=0)
                line(n, nb, f"unpack 0 wg {best_k[0]} r {best_k[1]} sg {best_k[2]}", unpack=0,
                     wg=best_k[0], r=best_k[1], sg=best_k[2])
            if best < TUNE_GAIN * base:
                for _, nrows in sh.blocks:
                    tuned[(op, nrows, cols, nb)] = best_k
            say(f"best {label} n={n} nb={nb}: wg {best_k[0]} r {best_k[1]} sg {best_k[2]} "
                f"{best * 1e6:.1f} us = {best / dec:.2f} x dec (default wg {dk[0]} r {dk[1]} "
                f"sg {dk[2]} {base * 1e6:.1f} us = {base / dec:.2f} x dec)")
            if uses:
                layer[n]["dec"] += uses * dec
                layer[n]["default"] += uses * base
                layer[n]["best"] += uses * best
        del sh
    for n in ns:
        L = layer[n]
        if L["dec"]:
            say(f"layer n={n}: decode projections {L['dec'] * 1e6:.1f} us; verify default "
                f"{L['default'] * 1e6:.1f} us = {L['default'] / L['dec']:.2f} steps, best "
                f"{L['best'] * 1e6:.1f} us = {L['best'] / L['dec']:.2f} steps"
                + (f", xq best {L['xq'] * 1e6:.1f} us = {L['xq'] / L['dec']:.2f} steps "
                   "(+ 4 quant_x a layer)" if "xq" in L else "")
                + f" (n rows: {n} steps of plain decode)")
    items = ", ".join(f"({op!r}, {r}, {c}, {nb}): ({wg}, {rr}, {sg})"
                      for (op, r, c, nb), (wg, rr, sg) in sorted(tuned.items()))
    say(f"MULTI_TUNED = {{{items}}}")
    items = ", ".join(f"({op!r}, {r}, {c}, {nb}): ({wg}, {rr}, {sg})"
                      for (op, r, c, nb), (wg, rr, sg) in sorted(tuned_xq.items()))
    say(f"MULTI_TUNED_XQ = {{{items}}}")
    say(f"sweep time: {time.perf_counter() - t0:.0f} s")
    return tuned


def preset_shapes(names=DEFAULT_PRESETS) -> list[tuple]:
    """(op, rows, cols, name, uses per layer, preset) of each distinct layer weight of the
    presets: wq / wo (q_dim x hidden; the same shape for Llama), wk / wv, w1 + w3, w2."""
    from modelfmt.presets import PRESETS
    out = []
    for nm in names:
        p = PRESETS[nm]
        h, f, hd = p["hidden_size"], p["intermediate_size"], p["head_dim"]
        out += [("matvec_multi", p["num_attention_heads"] * hd, h, "wq/wo", 2, nm),
                ("matvec_multi", p["num_key_value_heads"] * hd, h, "wk/wv", 2, nm),
                ("gate_up_multi", f, h, "w1+w3", 1, nm), ("matvec_multi", h, f, "w2", 1, nm)]
    return out


def sweep_default(dev, caps, rng, say, quick: bool = False, budget: float = BUDGET_S) -> dict:
    """The default sweep (module docstring): returns {(op, rows, cols, nb): (wg, r, sg)} of the
    entries to tune (best < TUNE_GAIN x default), for the xq kernels where quant_x builds."""
    shapes = ([(op, r, c, nm, u, "quick") for op, r, c, nm, u in QUICK_SHAPES] if quick
              else preset_shapes())
    ns = (2, MAIN_N) if quick else DEFAULT_NS
    tuned: dict = {}
    layer: dict = {}
    xq_used = None
    skipped = 0
    say("| op | shape | n | nb | variant | kernel | us | x dec |")
    say("|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for op, rows, cols, name, uses, preset in shapes:
        sh = Shape(dev, rng, op, rows, cols)
        label = f"{name} {rows}x{cols}"
        dec, slug = sh.time(caps, None, 1)
        say(f"| decode | {label} | 1 | - | decode | {slug} | {dec * 1e6:.1f} | 1.00 |")
        nw = 2 if op == "gate_up_multi" else 1
        for n in ns:
            nb = pow2(n)
            try:   # the verify body's choice (graph.VERIFY_XQ on): quant_x where it builds
                kq = kernel("quant_x", caps, fmt="q4_0", cols=cols, nb=nb)
                tq, _ = time_calls([[_calls(dev, kq, {**sh.x}, {"n_tok": n}, kq.grid())]], dev,
                                   min_secs=0.02)
                say(f"| quant_x | {label} | {n} | {nb} | quant_x | {kq.slug} | {tq * 1e6:.1f} | "
                    f"{tq / dec:.2f} |")
                xq = {"xq": 1}
            except UnsupportedKernel:
                tq, xq = 0.0, {}
            xq_used = bool(xq) if xq_used is None else xq_used
            seen: set = set()
            res = []
            for wg, r in [(0, 0)] + [c for c in DEFAULT_CANDS if nb * c[1] * nw <= 128]:
                variant = ("xq " if xq else "") + (f"wg {wg} r {r}" if wg else "default")
                if wg and time.perf_counter() - t0 > budget:
                    skipped += 1
                    continue
                try:
                    knobs = {**xq, **({"wg": wg, "r": r, "sg": 1} if wg else {})}
                    k = sh.first(caps, nb, **knobs)
                    if k.slug in seen:     # the builder clamped it to one already timed
                        continue
                    seen.add(k.slug)
                    t, slug = sh.time(caps, nb, n, **knobs)
                except UnsupportedKernel as e:
                    say(f"| {op} | {label} | {n} | {nb} | {variant} | unsupported: {e} | | |")
                    continue
                say(f"| {op} | {label} | {n} | {nb} | {variant} | {slug} | {t * 1e6:.1f} | "
                    f"{t / dec:.2f} |")
                res.append((t, (k.workgroup_size[0], k.meta["rows_per_wg"], int(k.key.subgroups))))
            if not res:
                continue
            (base, dk), (best, bk) = res[0], min(res)
            if best < TUNE_GAIN * base:
                for _, nrows in sh.blocks:
                    tuned[(op, nrows, cols, nb)] = bk
            say(f"best {label} n={n} nb={nb}: wg {bk[0]} r {bk[1]} sg {bk[2]} {best * 1e6:.1f} us"
                f" = {best / dec:.2f} x dec (default wg {dk[0]} r {dk[1]} {base * 1e6:.1f} us)"
                + (f" + quant_x {tq * 1e6:.1f} us" if xq else ""))
            L = layer.setdefault((preset, n), {"dec": 0.0, "default": 0.0, "best": 0.0, "qx": 0.0})
            L["dec"] += uses * dec
            L["default"] += uses * base
            L["best"] += uses * best
            L["qx"] += tq * QX_PER_LAYER.get(name, 1)
        del sh
    for (preset, n), L in layer.items():
        say(f"layer {preset} n={n}: decode projections {L['dec'] * 1e6:.1f} us; verify default "
            f"{L['default'] * 1e6:.1f} us = {L['default'] / L['dec']:.2f} steps, best "
            f"{L['best'] * 1e6:.1f} us = {L['best'] / L['dec']:.2f} steps"
            + (f" (+ quant_x ~{L['qx'] * 1e6:.1f} us)" if L["qx"] else "")
            + f" ({n} rows: {n} steps of plain decode)")
    if skipped:
        say(f"time budget ({budget:.0f} s) spent: {skipped} candidates skipped (--full: all)")
    name = "MULTI_TUNED_XQ" if xq_used else "MULTI_TUNED"
    items = ", ".join(f"({op!r}, {r}, {c}, {nb}): ({wg}, {rr}, {sg})"
                      for (op, r, c, nb), (wg, rr, sg) in sorted(tuned.items()))
    say(f"{name} = {{{items}}}")
    say("(" + ("the xq kernels: quant_x builds here, and the verify body runs them" if xq_used
               else "no quant_x here: the self-quantizing kernels")
        + "; the other table is swept by --full)")
    say(f"sweep time: {time.perf_counter() - t0:.0f} s")
    return tuned


def main(quick: bool = False, out_file: str | None = None, full: bool = False) -> int:
    from .bench import Report
    rep = Report()
    rep.say(f"# shaders bench --multi {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
            f"{harness.adapter_name(rep.dev)}; caps: subgroups={rep.caps.subgroups} "
            f"packed_dot={rep.caps.packed_dot} max_wg_storage={rep.caps.max_workgroup_storage}")
    (sweep if full else sweep_default)(rep.dev, rep.caps, rep.rng, rep.say, quick)
    rep.save(out_file)
    return 0


__all__ = ["sweep", "sweep_default", "preset_shapes", "main", "row_blocks"]
