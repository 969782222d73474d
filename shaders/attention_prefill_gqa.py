"""The GQA-row, register-tiled variant of attention_prefill (``attention_prefill_gqa.wgsl``).

Today's kernel (``attention_prefill.wgsl``, tiles ``"v1"``) gives a workgroup TQ rows of ONE query
head, so with GQA every K/V tile is loaded and staged once per query head, and its inner loops
read one workgroup-memory word per one to four FMAs. This variant gives a workgroup TQ tokens x
all G = n_heads / n_kv_heads query heads of one KV head (R = TQ * G rows) and register-tiles both
products: an RQ x RK block of scores per invocation, RP rows x DV head-dim vec4s of P.V.

A tile config is the string ``"RQxRK/TK/WG"`` (score block, keys per tile, invocations); the rest
follows: NKG = TK / RK key groups, R = (WG / NKG) * RQ rows, TQ = R / G tokens; (RP, DV) the P.V
split of the R x HD/4 accumulators over WG invocations. ``plan`` checks one against the dims and
the adapter's limits; ``pick`` takes the first of CONFIGS that fits (None: today's kernel).
Pure Python (runs in Pyodide).
"""

from __future__ import annotations

from dataclasses import dataclass

from .core import Caps, UnsupportedKernel

# tried in order by tiles="auto": fastest first as measured on the H200 (2026-12-03, ``python -m
# shaders.attention_bench --prefill``, TFLOP/s for a 512-token prompt with 8B heads / with 1B heads
# / 151 rows after 2,699 cached with 1B heads; today's kernel "v1" 3.0 / 3.1 / 4.0):
#   4x2/32/128  8.9 / 9.1 / 12.3     4x4/64/128  -  / 9.1 / 12.0     4x4/32/64  6.7 / 8.4 / 12.0
#   4x4/32/128  -  / 8.2 / 11.9      3x4/32/128  -  / 8.3 / 11.1     4x2/32/64  5.2 / 7.8 / 10.9
#   2x2/16/64   6.2 / 6.5 / 9.1      4x8/64/64   -  / 6.5 / 8.8      8x4/64/64  -  / 6.3 / 8.4
#   4x4/64/64   6.4 / 5.0 / 6.1      ("-": needs more than the H200's 48 KiB of workgroup memory)
# Adapters with less workgroup memory get the first that fits: "2x2/16/64" fits the WebGPU default
# of 16 KiB at head_dim 64; "3x4/32/128" serves G = 3 (9 / 3 heads).
CONFIGS = ("4x2/32/128", "4x4/64/128", "4x4/32/64", "4x4/32/128", "3x4/32/128", "4x2/32/64",
           "2x2/16/64", "4x8/64/64", "8x4/64/64", "4x4/64/64")


@dataclass(frozen=True)
class Tiles:
    rq: int     # score block rows
    rk: int     # score block keys
    tk: int     # keys per tile
    wg: int     # invocations per workgroup
    tq: int     # query tokens per workgroup
    r: int      # rows (token, head) per workgroup: tq * G
    rp: int     # P.V rows per invocation
    dv: int     # P.V head-dim vec4s per invocation
    shared: int  # bytes of workgroup memory

    @property
    def name(self) -> str:
        return f"{self.rq}x{self.rk}/{self.tk}/{self.wg}"


def _parse(cfg: str) -> tuple[int, int, int, int]:
    try:
        blk, tk, wg = cfg.split("/")
        rq, rk = blk.split("x")
        return int(rq), int(rk), int(tk), int(wg)
    except ValueError:
        raise UnsupportedKernel(f"attention_prefill: tiles {cfg!r} is not 'RQxRK/TK/WG' "
                                f"(e.g. '4x4/64/128'), 'auto' or 'v1'") from None


def plan(cfg: str, caps: Caps, n_heads: int, n_kv_heads: int, head_dim: int) -> Tiles:
    """The derived sizes of ``cfg`` for these dims; UnsupportedKernel (saying why) if it does not
    tile them or does not fit the adapter."""
    rq, rk, tk, wg = _parse(cfg)
    g, h4 = n_heads // n_kv_heads, head_dim // 4

    def no(why: str):
        raise UnsupportedKernel(f"attention_prefill: tiles {cfg} {why} (nh={n_heads}, "
                                f"nkv={n_kv_heads}, hd={head_dim})")

    if min(rq, rk, tk, wg) < 1 or tk % rk or tk % 4 or wg % (tk // rk):
        no("is not a whole number of score blocks per tile and workgroup")
    r = wg // (tk // rk) * rq
    if r % g:
        no(f"gives {r} rows per workgroup, not whole tokens of {g} heads")
    per = r * h4 // wg if (r * h4) % wg == 0 else 0      # P.V vec4 accumulators per invocation
    rp = next((p for p in (4, 2, 8, 3, 6, 1, 16) if per and r % p == 0 and per % p == 0
               and h4 % (per // p) == 0), 0)
    if not rp:
        no("splits the rows x head-dim vec4s of P.V unevenly over the invocations")
    shared = 16 * (r * h4 + tk * (h4 + 1) + r * tk // 4) + 4 * (r * (tk // rk + 1) + 2 * r)
    if wg > caps.max_workgroup_size:
        no(f"needs {wg} invocations per workgroup, adapter has {caps.max_workgroup_size}")
    if shared > caps.max_workgroup_storage:
        no(f"needs {shared} B of workgroup storage, adapter has {caps.max_workgroup_storage}")
    return Tiles(rq, rk, tk, wg, r // g, r, rp, per // rp, shared)


def pick(caps: Caps, n_heads: int, n_kv_heads: int, head_dim: int) -> Tiles | None:
    """The first of CONFIGS that tiles these dims within the adapter's limits, else None."""
    for cfg in CONFIGS:
        try:
            return plan(cfg, caps, n_heads, n_kv_heads, head_dim)
        except UnsupportedKernel:
            continue
    return None


def tile_io(kv: str, head_dim: int, tk: int, wg: int, cast: bool = False) -> dict[str, str]:
    """TILE_LOADS (the invocation's K and V 16-byte words of positions k0 .. k0+TK-1 into
    registers, zero past ``klast``) and STORE_K / STORE_V (into ``kt`` as f32; ``cast``: as
    ``vec4<ST>``, the v1 kernel's f32 or f16 tile type), unrolled; the last round is guarded where
    TK x HD is not a whole number of words per invocation. Both tilings stage K/V this way."""
    per = 8 if kv == "f16" else 4          # elements per 16-byte word
    wpr = head_dim // per                  # words per cache row
    words = tk * wpr
    zero = "vec4<u32>(0u)" if kv == "f16" else "vec4<f32>(0.0)"
    to = (lambda x: f"vec4<ST>({x})") if cast else (lambda x: x)
    loads, st = "", {"k": "", "v": ""}
    for u in range(-(-words // wg)):
        guard = (u + 1) * wg > words
        ok = f"k0 + kk{u} <= klast" + (f" && i{u} < {words}u" if guard else "")
        loads += (f"        let i{u} = lid + {u * wg}u;\n"
                  f"        let kk{u} = i{u} / {wpr}u;\n"
                  f"        let ok{u} = {ok};\n"
                  f"        let a{u} = (min(k0 + kk{u}, klast) * N_KV + kvh) * {wpr}u + i{u} % {wpr}u;\n"
                  f"        let kr{u} = select({zero}, k_cache[a{u}], ok{u});\n"
                  f"        let vr{u} = select({zero}, v_cache[a{u}], ok{u});\n")
        o = f"kk{u} * KROW4 + (i{u} % {wpr}u) * {per // 4}u"
        for s in "kv":
            w = f"{s}r{u}"
            if kv == "f16":
                # unpack + convert rather than bitcast<vec2<f16>>: no shader-f16 needed, exact
                # (naga, wgpu 0.32, mistypes the bitcast inside a constructor)
                code = (f"kt[{o}] = {to(f'vec4<f32>(unpack2x16float({w}.x), unpack2x16float({w}.y))')}; "
                        f"kt[{o} + 1u] = {to(f'vec4<f32>(unpack2x16float({w}.z), unpack2x16float({w}.w))')};")
            else:
                code = f"kt[{o}] = {to(w)};"
            st[s] += (f"        if (i{u} < {words}u) {{ {code} }}\n" if guard
                      else f"        {code}\n")
    return {"TILE_LOADS": loads.rstrip("\n"), "STORE_K": st["k"].rstrip("\n"),
            "STORE_V": st["v"].rstrip("\n")}


def _compute(t: Tiles) -> dict[str, str]:
    """INIT (causal limits of the score rows, P.V accumulators), SCORES, P_STORE and PV, unrolled
    over the register block with named scalars so they stay in registers."""
    A, C, B, E = range(t.rq), range(t.rk), range(t.rp), range(t.dv)
    init = [f"    let lim{a} = min(pos + t0 + (iq * RQ + {a}u) / G, klast);   "
            f"// causal end of score row {a}" for a in A]
    init += [f"    var acc{b}_{e} = vec4<f32>(0.0);" for b in B for e in E]
    init += [f"    var l{b} = 0.0;" for b in B]
    sc = [f"        var s{a}_{c} = 0.0;" for a in A for c in C]
    sc.append("        for (var d4 = 0u; d4 < HD4; d4++) {")
    sc += [f"            let q{a} = qs[(iq * RQ + {a}u) * HD4 + d4];" for a in A]
    sc += [f"            let k{c} = kt[(ik + {c}u * NKG) * KROW4 + d4];" for c in C]
    sc += [f"            s{a}_{c} += dot(q{a}, k{c});" for a in A for c in C]
    sc.append("        }")
    sc += [f"        s{a}_{c} = select(NEG, s{a}_{c}, k0 + ik + {c}u * NKG <= lim{a});"
           for a in A for c in C]
    for a in A:
        mx = f"s{a}_0"
        for c in C[1:]:
            mx = f"max({mx}, s{a}_{c})"
        sc.append(f"        pm[(iq * RQ + {a}u) * PMROW + ik] = {mx};")
    ps = [f"        let mq{a} = ms[iq * RQ + {a}u];" for a in A]
    for a in A:
        for c in C:
            ps.append(f"        {{ let kk = ik + {c}u * NKG; "
                      f"pw[(iq * RQ + {a}u) * PROW4 + kk / 4u][kk % 4u] = exp(s{a}_{c} - mq{a}); }}")
    pv = [f"        let al{b} = al[ip * RP + {b}u];" for b in B]
    pv += [f"        l{b} *= al{b};" for b in B]
    pv += [f"        acc{b}_{e} *= al{b};" for b in B for e in E]
    pv.append("        for (var k4 = 0u; k4 < PROW4; k4++) {")
    pv += [f"            let p{b} = pw[(ip * RP + {b}u) * PROW4 + k4];" for b in B]
    for j, comp in enumerate("xyzw"):
        pv += [f"            let v{j}_{e} = kt[(4u * k4 + {j}u) * KROW4 + id + {e}u * NDG];"
               for e in E]
        pv += [f"            acc{b}_{e} += p{b}.{comp} * v{j}_{e};" for b in B for e in E]
    pv += [f"            l{b} += p{b}.{comp};" for b in B for comp in "xyzw"]
    pv.append("        }")
    return {"INIT": "\n".join(init), "SCORES": "\n".join(sc), "P_STORE": "\n".join(ps),
            "PV": "\n".join(pv)}


def _store(t: Tiles, split: int) -> str:
    """STORE: acc / l of the invocation's P.V rows into ``out``, or the unnormalised (acc, m, l)
    into ``part`` (split variant); rows past n_tok are not stored."""
    lines = []
    for b in range(t.rp):
        lines.append(f"    {{ let rr = ip * RP + {b}u;\n      let t = t0 + rr / G;\n"
                     f"      let hq = kvh * G + rr % G;\n      if (t < n_tok) {{")
        if not split:
            lines.append("        let o = (t * N_HEADS + hq) * HD4 + id;")
            lines += [f"        out[o + {e}u * NDG] = acc{b}_{e} / l{b};" for e in range(t.dv)]
        else:
            lines.append("        let o = ((t * N_HEADS + hq) * MAX_SPLITS + wid.z) * (HD + 2u);")
            for e in range(t.dv):
                lines.append(f"        {{ let d = o + 4u * (id + {e}u * NDG); "
                             f"part[d] = acc{b}_{e}.x; part[d + 1u] = acc{b}_{e}.y; "
                             f"part[d + 2u] = acc{b}_{e}.z; part[d + 3u] = acc{b}_{e}.w; }}")
            lines.append(f"        if (id == 0u) {{ part[o + HD] = ms[rr]; part[o + HD + 1u] = l{b}; }}")
        lines.append("      }\n    }")
    return "\n".join(lines)


def subs(kv: str, head_dim: int, t: Tiles, split: int) -> dict[str, str]:
    """The template's generated pieces for tiles ``t`` (constants and declarations are the
    caller's: they are shared with today's kernel)."""
    return {"WG": str(t.wg), "TQ": str(t.tq), "TK": str(t.tk), "RQ": str(t.rq), "RK": str(t.rk),
            "RP": str(t.rp), "DV": str(t.dv), "STORE": _store(t, split),
            **_compute(t), **tile_io(kv, head_dim, t.tk, t.wg)}


def flops(n_heads: int, head_dim: int, n_tok: int, pos: int) -> float:
    """Useful FLOPs of a causal prefill chunk (QK^T and PV; query t over pos + t + 1 positions)."""
    return 2 * 2 * n_heads * head_dim * (n_tok * pos + n_tok * (n_tok + 1) / 2)

