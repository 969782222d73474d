"""GPU sampling of the next token: only the chosen id (u32) is written, so a decode step reads back
4 bytes instead of the vocabulary's logits.

Two dispatches with the same uniform (the driver records both, in this order):
  sample         logits (vocab) f32, history (>= n_hist) u32, cand (scratch, ``cand_bytes``),
                 params; grid (n_chunks = ceil(vocab / (4*WG)), 1, 1)
  sample_select  cand, out (1) u32, params; grid (1, 1, 1)
  params{temperature f32, top_k u32, top_p f32, rep_penalty f32, seed u32, step u32, n_hist u32}

Semantics (HF order: repetition penalty, temperature, top-k, top-p):
  * repetition penalty over the distinct ids of ``history[:n_hist]``: logit > 0 divided by it,
    otherwise multiplied (1.0 = off);
  * temperature <= 0 or top_k == 1: greedy argmax, ties -> lowest id;
  * top_k == 0 and top_p >= 1: exact sampling from softmax(logit / T) over the whole vocabulary
    by the Gumbel-max trick, argmax(logit / T + Gumbel(hash(seed, step, id)));
  * otherwise top-k then top-p: K = min(top_k, KMAX) candidates (top_k = 0 means KMAX), where
    KMAX = 64 bounds the candidate lists; top-p keeps the shortest prefix of the sorted candidates
    whose probability mass reaches top_p; the draw is by inverse CDF with u = hash(seed, step).
Everything is deterministic for a given (seed, step): the hash is PCG (O'Neill's pcg32 output
function used as a hash), no atomics decide an order.
The algorithm of each pass is described at the top of sample_chunks.wgsl / sample_select.wgsl.
"""

from __future__ import annotations

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .wgsl_common import SG_ARGS, SG_CALL, enable_lines, features
from .registry import Case, register, register_cases

KMAX = 64
PARAMS = Params((("temperature", "f32"), ("top_k", "u32"), ("top_p", "f32"),
                 ("rep_penalty", "f32"), ("seed", "u32"), ("step", "u32"), ("n_hist", "u32")))

COMMON = """
// order-preserving u32 key of an f32 (larger value -> larger key; 0 is below every number)
fn f2key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn key2f(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k ^ 0x80000000u, (k & 0x80000000u) != 0u));
}
// PCG hash (pcg32's LCG step and RXS-M-XS output)
fn pcg(v: u32) -> u32 {
    let s = v * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}
fn rng_base(seed: u32, step: u32) -> u32 { return pcg(seed ^ pcg(step)); }
fn uniform01(h: u32) -> f32 { return f32(h >> 8u) * (1.0 / 16777216.0); }          // [0, 1)
fn gumbel_noise(base: u32, id: u32) -> f32 {
    let u = (f32(pcg(base ^ pcg(id + 1u)) >> 8u) + 0.5) * (1.0 / 16777216.0);      // (0, 1)
    return -log(-log(u));
}
"""


def _argmax(subgroups: bool) -> str:
    """WGSL ``wg_argmax(key, id, lid[, sg...]) -> vec2<u32>``: workgroup-wide best (key, id) by
    ``before`` (larger key, then lower id), through the workgroup arrays ``sk``/``si`` (>= WG)."""
    if subgroups:
        return """
fn wg_argmax(k: u32, i: u32, lid: u32, sg_lane: u32, sg_size: u32) -> vec2<u32> {
    let sg_id = lid / sg_size;
    let n_sg = (WG + sg_size - 1u) / sg_size;
    let mk = subgroupMax(k);
    let mi = subgroupMin(select(0xffffffffu, i, k == mk));
    if (sg_lane == 0u) { sk[sg_id] = mk; si[sg_id] = mi; }
    workgroupBarrier();
    var bk = sk[0];
    var bi = si[0];
    for (var s = 1u; s < n_sg; s++) {
        if (before(sk[s], si[s], bk, bi)) { bk = sk[s]; bi = si[s]; }
    }
    return vec2<u32>(bk, bi);
}
"""
    return """
fn wg_argmax(k: u32, i: u32, lid: u32) -> vec2<u32> {
    sk[lid] = k;
    si[lid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && before(sk[lid + s], si[lid + s], sk[lid], si[lid])) {
            sk[lid] = sk[lid + s];
            si[lid] = si[lid + s];
        }
        workgroupBarrier();
    }
    return vec2<u32>(sk[0], si[0]);
}
"""


def _wg(caps: Caps) -> int:
    wg = 256 if caps.max_workgroup_size >= 256 else 128
    if wg > caps.max_workgroup_size or KMAX > wg:
        raise UnsupportedKernel(f"sample: needs a workgroup of {wg} invocations "
                                f"(adapter max {caps.max_workgroup_size})")
    return wg


def _check_vocab(op: str, vocab: int) -> None:
    if not 1 <= vocab < (1 << 24):
        raise UnsupportedKernel(f"{op}: vocab must be in [1, 2^24), got {vocab}")


def cand_bytes(vocab: int, caps: Caps) -> int:
    """Byte size of the ``cand`` scratch buffer shared by the two passes."""
    chunk = 4 * _wg(caps)
    return -(-vocab // chunk) * KMAX * 8


@register("sample")
def build_sample(caps: Caps, vocab: int) -> Kernel:
    _check_vocab("sample", vocab)
    wg = _wg(caps)
    sg = caps.subgroups
    nb = -(-vocab // (4 * wg))
    key = KernelKey(op="sample", wg=wg, subgroups=sg, dims=(("v", vocab), ("kmax", KMAX)))
    src = render(load_template("sample_chunks"), {
        "ENABLES": enable_lines(False, sg), "VOCAB": str(vocab), "WG": str(wg),
        "KMAX": str(KMAX), "PARAMS": PARAMS.wgsl(), "COMMON": COMMON, "ARGMAX": _argmax(sg),
        "SG_ARGS": SG_ARGS if sg else "", "SG_CALL": SG_CALL if sg else ""}, key.slug())
    return Kernel(key=key, wgsl=src, params=PARAMS, workgroup_size=(wg, 1, 1),
                  features=features(False, sg), bindings=(
                      Binding("logits", "read", "(vocab) f32"),
                      Binding("history", "read", "(>= n_hist) u32 token ids"),
                      Binding("cand", "read_write", "(n_chunks, KMAX) (key, id) u32 pairs"),
                      Binding("params", "uniform", "Params{temperature, top_k, top_p, "
                                                   "rep_penalty, seed, step, n_hist}")),
                  grid=Grid.fixed(nb), meta={"cand_bytes": nb * KMAX * 8,
                        "kmax": KMAX})


@register("sample_select")
def build_select(caps: Caps, vocab: int) -> Kernel:
    _check_vocab("sample_select", vocab)
    wg = _wg(caps)
    sg = caps.subgroups
    p2 = 1
    while p2 < KMAX:
        p2 *= 2
    key = KernelKey(op="sample_select", wg=wg, subgroups=sg, dims=(("v", vocab), ("kmax", KMAX)))
    src = render(load_template("sample_select"), {
        "ENABLES": enable_lines(False, sg), "VOCAB": str(vocab), "WG": str(wg),
        "KMAX": str(KMAX), "P2": str(p2), "PARAMS": PARAMS.wgsl(), "COMMON": COMMON,
        "ARGMAX": _argmax(sg), "SG_ARGS": SG_ARGS if sg else "",
        "SG_CALL": SG_CALL if sg else ""}, key.slug())
    return Kernel(key=key, wgsl=src, params=PARAMS, workgroup_size=(wg, 1, 1),
                  features=features(False, sg), bindings=(
                      Binding("cand", "read", "(n_chunks, KMAX) (key, id) u32 pairs"),
                      Binding("out", "read_write", "(1) u32 chosen token id"),
                      Binding("params", "uniform", "same Params as sample")),
                  grid=Grid.fixed(1))


# ---- numpy reference (mirrors the hash exactly, probabilities in float64) ----
def _pcg(v):
    import numpy as np
    v = np.asarray(v, np.uint64) & 0xFFFFFFFF
    s = (v * 747796405 + 2891336453) & 0xFFFFFFFF
    w = (((s >> ((s >> 28) + 4)) ^ s) * 277803737) & 0xFFFFFFFF
    return ((w >> 22) ^ w) & 0xFFFFFFFF


def _base(seed, step):
    return int(_pcg(int(seed) ^ int(_pcg(step))))


def ref_penalised(logits, history, rep_penalty):
    """float32 logits with the HF repetition penalty over the distinct history ids."""
    import numpy as np
    v = np.asarray(logits, np.float32).copy()
    if rep_penalty != 1.0 and len(history):
        ids = np.unique(np.asarray(history, np.int64))
        p = np.float32(rep_penalty)
        v[ids] = np.where(v[ids] > 0, v[ids] / p, v[ids] * p)
    return v


def ref_sample(logits, history, temperature, top_k, top_p, rep_penalty, seed, step) -> int:
    """The token id the two passes choose (same rules, same hash)."""
    import numpy as np
    v = ref_penalised(logits, history, rep_penalty).astype(np.float64)
    ids = np.arange(len(v))
    if temperature <= 0 or top_k == 1:
        return int(np.argmax(v))                      # first maximum = lowest id
    base = _base(seed, step)
    if top_k == 0 and top_p >= 1.0:
        h = _pcg(base ^ _pcg(ids + 1))
        u = ((h >> 8).astype(np.float64) + 0.5) / 16777216.0
        return int(np.argmax(v / temperature - np.log(-np.log(u))))
    k = min(top_k if top_k > 0 else KMAX, KMAX, len(v))
    order = np.lexsort((ids, -v))[:k]                 # value desc, id asc
    p = np.exp((v[order] - v[order[0]]) / temperature)
    before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    kept = max(1, int(np.sum(before < top_p * p.sum())))
    p = p[:kept]
    u = float(base >> 8) / 16777216.0
    j = int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
    return int(order[min(j, kept - 1)])


def allowed_set(logits, history, top_k, top_p, rep_penalty, temperature) -> set[int]:
    """Ids a top-k/top-p draw may return (float64 mass; ties at the cut both allowed)."""
    import numpy as np
    v = ref_penalised(logits, history, rep_penalty).astype(np.float64)
    k = min(top_k if top_k > 0 else KMAX, KMAX, len(v))
    order = np.lexsort((np.arange(len(v)), -v))[:k]
    p = np.exp((v[order] - v[order[0]]) / temperature)
    before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    kept = max(1, int(np.sum(before < top_p * p.sum() * (1 + 1e-6))))
    return set(int(i) for i in order[:kept])


# ---- check cases ----
def adversarial_logits(rng, vocab, k):
    """Logits that defeat the select pass's fast path: every 1024-token chunk holds k-1 large
    values and nothing else near them, so each chunk's k-th entry is tiny and the list prefixes
    above the best k-th entry hold ~(vocab / 1024) * (k - 1) entries (> CAP = 1024)."""
    import numpy as np
    v = (rng.standard_normal(vocab) - 100.0).astype(np.float32)
    for c0 in range(0, vocab, 1024):
        n = min(k - 1, vocab - c0)
        v[c0:c0 + n] = 10.0 + rng.standard_normal(n).astype(np.float32)
    return v


def _case(vocab, temperature, top_k, top_p, rep_penalty, seed, step, n_hist, label,
          adversarial=False) -> Case:
    params = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
              "rep_penalty": rep_penalty, "seed": seed, "step": step, "n_hist": n_hist}

    def make(rng):
        import numpy as np
        logits = (adversarial_logits(rng, vocab, top_k or KMAX) if adversarial
                  else (rng.standard_normal(vocab) * 3).astype(np.float32))
        hist = rng.integers(0, vocab, size=max(n_hist, 1)).astype(np.uint32)
        if n_hist >= 2:
            hist[1] = hist[0]                          # a repeated id is penalised once
        return {"buffers": {"logits": logits, "history": hist, "out": 4,
                            "cand": -(-vocab // 256) * KMAX * 8},
                "params": params}

    def ref(inp):
        import numpy as np
        b = inp["buffers"]
        tok = ref_sample(b["logits"], b["history"][:n_hist], temperature, top_k, top_p,
                         rep_penalty, seed, step)
        return {"out": np.array([tok], np.uint32)}

    def steps(caps, inp):
        k1, k2 = build_sample(caps, vocab), build_select(caps, vocab)
        return [(k1, params, k1.grid()), (k2, params, k2.grid())]

    return Case(op="sample", dims={"vocab": vocab}, make_inputs=make, reference=ref,
                tol="exact", steps=steps, label=f"V={vocab},{label}")


@register_cases("sample", covers=("sample_select",))
def sample_cases(quick: bool) -> list[Case]:
    out = [_case(1, 0.0, 0, 1.0, 1.0, 0, 0, 0, "greedy"),
           _case(7, 0.0, 0, 1.0, 1.3, 1, 2, 5, "greedy,pen"),
           _case(7, 0.8, 3, 0.9, 1.0, 5, 1, 0, "k3,p.9"),
           _case(49152, 0.0, 0, 1.0, 1.2, 3, 9, 64, "greedy,pen"),
           _case(49152, 0.7, 40, 0.9, 1.1, 42, 7, 32, "k40,p.9,pen"),
           _case(128256, 0.0, 0, 1.0, 1.0, 0, 0, 0, "greedy"),
           _case(128256, 1.0, 0, 0.8, 1.0, 11, 3, 0, "k0(=64),p.8"),
           _case(49152, 3.0, 50, 0.95, 1.0, 8, 2, 0, "k50,p.95,fallback", adversarial=True)]
    if not quick:
        out += [_case(1, 0.9, 50, 0.9, 1.0, 1, 1, 0, "k50"),
                _case(7, 1.0, 0, 1.0, 1.0, 9, 4, 0, "gumbel"),
                _case(49152, 1.2, 0, 1.0, 1.0, 77, 5, 0, "gumbel"),
                _case(128256, 0.6, 64, 0.95, 1.3, 123, 17, 100, "k64,p.95,pen"),
                _case(128256, 1.0, 0, 1.0, 1.1, 5, 6, 20, "gumbel,pen")]
    return out
