// GPU sampling, pass 1 of 2 (op "sample"): per-chunk candidates. Workgroup c owns tokens
// [c*CHUNK, c*CHUNK + CHUNK) (invocation lid: tokens c*CHUNK + lid + WG*i, i < PER). It
//  1. marks the history tokens that fall in its chunk in a workgroup bitmap (so duplicates in the
//     history are penalised once, HF-style: logit > 0 divided by the penalty, < 0 multiplied);
//  2. greedy (temperature <= 0 or top_k == 1): writes its (logit, id) maximum, ties -> lowest id;
//     plain sampling (top_k == 0 and top_p >= 1): the same maximum of logit/T + Gumbel(hash(seed,
//     step, id)), i.e. an exact draw from softmax(logit/T) over the whole vocabulary (Gumbel-max);
//  3. top-k / top-p: bitonic-sorts the chunk by (logit desc, id asc) in workgroup memory and writes
//     its best KMAX (logit, id) pairs; pass 2 (sample_select.wgsl) finishes.
// Candidates are (key, id) u32 pairs: key = order-preserving bits of the f32 value (0 = padding).
{{ENABLES}}
const VOCAB: u32 = {{VOCAB}}u;
const WG: u32 = {{WG}}u;
const PER: u32 = 4u;
const CHUNK: u32 = WG * PER;
const KMAX: u32 = {{KMAX}}u;

{{PARAMS}}
@group(0) @binding(0) var<storage, read> logits: array<f32>;           // (VOCAB) f32
@group(0) @binding(1) var<storage, read> history: array<u32>;          // (>= n_hist) token ids
@group(0) @binding(2) var<storage, read_write> cand: array<vec2<u32>>; // (n_chunks, KMAX) (key, id)
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> hbits: array<atomic<u32>, CHUNK / 32u>;  // history bitmap of this chunk
var<workgroup> sk: array<u32, CHUNK>;                   // sort keys
var<workgroup> si: array<u32, CHUNK>;                   // token ids

{{COMMON}}

{{ARGMAX}}

fn mark(id: u32, c0: u32) {
    if (id >= c0 && id < c0 + CHUNK) { atomicOr(&hbits[(id - c0) / 32u], 1u << ((id - c0) % 32u)); }
}

// (ka, ia) ranks before (kb, ib): larger value first, then lower id
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{{SG_ARGS}}) {
    let c0 = wid.x * CHUNK;
    // ---- 1. history bitmap (workgroup-uniform branch on params) ----
    for (var i = lid; i < CHUNK / 32u; i += WG) { atomicStore(&hbits[i], 0u); }
    workgroupBarrier();
    let pen = params.rep_penalty;
    if (pen != 1.0) {
        // 4 independent loads per step (clamped: marking the last id again is harmless)
        let last = params.n_hist - 1u;
        for (var i = lid; i < params.n_hist; i += 4u * WG) {
            mark(history[i], c0);
            mark(history[min(i + WG, last)], c0);
            mark(history[min(i + 2u * WG, last)], c0);
            mark(history[min(i + 3u * WG, last)], c0);
        }
    }
    workgroupBarrier();
    // ---- penalised logits of this invocation's tokens ----
    var key: array<u32, PER>;
    var ids: array<u32, PER>;
    let greedy = params.temperature <= 0.0 || params.top_k == 1u;
    let gumbel = !greedy && params.top_k == 0u && params.top_p >= 1.0;
    let base = rng_base(params.seed, params.step);
    for (var i = 0u; i < PER; i++) {
        let o = lid + WG * i;
        let id = c0 + o;
        ids[i] = id;
        key[i] = 0u;
        if (id < VOCAB) {
            var v = logits[id];
            if ((atomicLoad(&hbits[o / 32u]) & (1u << (o % 32u))) != 0u) {
                v = select(v * pen, v / pen, v > 0.0);
            }
            if (gumbel) { v = v / params.temperature + gumbel_noise(base, id); }
            key[i] = f2key(v);
        }
    }
    if (greedy || gumbel) {
        // ---- 2. chunk maximum -> one candidate ----
        var bk = key[0];
        var bi = ids[0];
        for (var i = 1u; i < PER; i++) {
            if (before(key[i], ids[i], bk, bi)) { bk = key[i]; bi = ids[i]; }
        }
        let best = wg_argmax(bk, bi, lid{{SG_CALL}});
        if (lid == 0u) { cand[wid.x * KMAX] = best; }
        return;
    }
    // ---- 3. bitonic sort of the chunk, descending ----
    for (var i = 0u; i < PER; i++) { sk[lid + WG * i] = key[i]; si[lid + WG * i] = ids[i]; }
    workgroupBarrier();
    for (var k = 2u; k <= CHUNK; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            for (var qq = lid; qq < CHUNK / 2u; qq += WG) {
                let a = 2u * qq - (qq & (j - 1u));   // lower index of the pair (bit j clear)
                let b = a + j;
                let desc = (a & k) == 0u;            // direction of this bitonic run
                let ab = before(sk[b], si[b], sk[a], si[a]);
                if (ab == desc) {
                    let tk = sk[a]; sk[a] = sk[b]; sk[b] = tk;
                    let ti = si[a]; si[a] = si[b]; si[b] = ti;
                }
            }
            workgroupBarrier();
        }
    }
    for (var r = lid; r < KMAX; r += WG) { cand[wid.x * KMAX + r] = vec2<u32>(sk[r], si[r]); }
}
