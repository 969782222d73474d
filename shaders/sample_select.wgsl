// GPU sampling, pass 2 of 2 (op "sample_select"): one workgroup turns the per-chunk candidates of
// sample_chunks.wgsl into one token id, out[0].
//  greedy / Gumbel: the maximum over the chunks' single candidates (ties -> lowest id).
//  top-k / top-p:   K = min(top_k (0 -> KMAX), KMAX, VOCAB). The global top K lies within the
//    chunks' sorted top-K lists. Ranking is by (value, then lower id), so no two entries tie.
//    Fast path: T0 = the best of the chunks' K-th entries ranks at or below the global K-th
//    (its chunk alone has K entries at or above it), so the prefixes of the lists at or above T0
//    hold the whole top K; one invocation per chunk walks its prefix (usually 0-2 entries), the
//    gathered M entries (M <= CAP) are bitonic-sorted in workgroup memory. Fallback when M > CAP
//    (adversarial logits): a radix select over the 56-bit composite (value key, 24-bit inverted
//    id) finds the exact K-th in 7 rounds of 8-bit histograms, and exactly K entries are gathered.
//    Then one invocation computes softmax(v / T) over the K best, keeps the shortest prefix whose
//    mass reaches top_p (HF TopPLogitsWarper: a token is kept while the mass before it is < top_p,
//    at least one) and draws with u = hash(seed, step) by inverse CDF.
{{ENABLES}}
const VOCAB: u32 = {{VOCAB}}u;
const WG: u32 = {{WG}}u;
const CHUNK: u32 = WG * 4u;          // tokens per pass-1 workgroup
const NB: u32 = (VOCAB + CHUNK - 1u) / CHUNK;
const KMAX: u32 = {{KMAX}}u;
const P2: u32 = {{P2}}u;             // KMAX rounded up to a power of two (sort width)
const CAP: u32 = 1024u;              // fast-path capacity (gathered entries)

{{PARAMS}}
@group(0) @binding(0) var<storage, read> cand: array<vec2<u32>>;     // (NB, KMAX) (key, id)
@group(0) @binding(1) var<storage, read_write> out: array<u32>;      // (1) chosen token id
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> sk: array<u32, max(WG, CAP)>;   // sort keys / argmax slots
var<workgroup> si: array<u32, max(WG, CAP)>;   // token ids
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> st: array<u32, 5>;        // want_hi, want_lo, mask_hi, mask_lo, k remaining
var<workgroup> count: atomic<u32>;
var<workgroup> gathered: u32;         // count, published for workgroupUniformLoad

{{COMMON}}

{{ARGMAX}}

fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// bitonic sort of sk/si[0 .. n) (n a power of two), best first; call from uniform control flow
fn bitonic(n: u32, lid: u32) {
    for (var kk = 2u; kk <= n; kk <<= 1u) {
        for (var j = kk >> 1u; j > 0u; j >>= 1u) {
            for (var qq = lid; qq < n / 2u; qq += WG) {
                let a = 2u * qq - (qq & (j - 1u));
                let b = a + j;
                if (before(sk[b], si[b], sk[a], si[a]) == ((a & kk) == 0u)) {
                    let tk = sk[a]; sk[a] = sk[b]; sk[b] = tk;
                    let ti = si[a]; si[a] = si[b]; si[b] = ti;
                }
            }
            workgroupBarrier();
        }
    }
}

// softmax(v / T) over the k best (sorted in sk/si), top-p prefix, inverse-CDF draw -> out[0]
fn finish(k: u32, lid: u32) {
    if (lid != 0u) { return; }
    let inv_t = 1.0 / params.temperature;
    let v0 = key2f(sk[0]);
    var total = 0.0;
    for (var i = 0u; i < k; i++) { total += exp((key2f(sk[i]) - v0) * inv_t); }
    var kept = 0u;
    var mass = 0.0;
    for (var i = 0u; i < k; i++) {
        if (i > 0u && mass >= params.top_p * total) { break; }
        mass += exp((key2f(sk[i]) - v0) * inv_t);
        kept = i + 1u;
    }
    let goal = uniform01(rng_base(params.seed, params.step)) * mass;
    var pick = si[kept - 1u];
    var run = 0.0;
    for (var i = 0u; i < kept; i++) {
        run += exp((key2f(sk[i]) - v0) * inv_t);
        if (run > goal) { pick = si[i]; break; }
    }
    out[0] = pick;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32{{SG_ARGS}}) {
    let greedy = params.temperature <= 0.0 || params.top_k == 1u;
    let gumbel = !greedy && params.top_k == 0u && params.top_p >= 1.0;
    if (greedy || gumbel) {
        var bk = 0u;
        var bi = 0xffffffffu;
        for (var c = lid; c < NB; c += WG) {
            let e = cand[c * KMAX];
            if (before(e.x, e.y, bk, bi)) { bk = e.x; bi = e.y; }
        }
        let best = wg_argmax(bk, bi, lid{{SG_CALL}});
        if (lid == 0u) { out[0] = best.y; }
        return;
    }
    var k = KMAX;
    if (params.top_k > 0u) { k = min(params.top_k, KMAX); }
    k = min(k, VOCAB);
    // ---- fast path: T0 = best of the chunks' k-th entries; gather the list prefixes >= T0 ----
    var bk = 0u;
    var bi = 0xffffffffu;
    for (var c = lid; c < NB; c += WG) {
        let e = cand[c * KMAX + k - 1u];
        if (before(e.x, e.y, bk, bi)) { bk = e.x; bi = e.y; }
    }
    let t0 = wg_argmax(bk, bi, lid{{SG_CALL}});
    if (lid == 0u) { atomicStore(&count, 0u); }
    workgroupBarrier();   // also: every wg_argmax read of sk/si is done
    for (var c = lid; c < NB; c += WG) {
        for (var i = 0u; i < k; i++) {
            let e = cand[c * KMAX + i];
            if (before(t0.x, t0.y, e.x, e.y)) { break; }   // ranks below T0: the rest does too
            let slot = atomicAdd(&count, 1u);
            if (slot < CAP) { sk[slot] = e.x; si[slot] = e.y; }
        }
    }
    workgroupBarrier();
    if (lid == 0u) { gathered = atomicLoad(&count); }
    let m = workgroupUniformLoad(&gathered);
    if (m <= CAP) {
        var w = 2u;
        while (w < m) { w <<= 1u; }
        for (var i = m + lid; i < w; i += WG) { sk[i] = 0u; si[i] = 0xffffffffu; }
        workgroupBarrier();
        bitonic(w, lid);
        finish(k, lid);
        return;
    }
    let n = NB * k;
    // ---- radix select of the k-th largest (key, ~id) ----
    if (lid == 0u) { st[0] = 0u; st[1] = 0u; st[2] = 0u; st[3] = 0u; st[4] = k; }
    for (var r = 0u; r < 7u; r++) {
        for (var b = lid; b < 256u; b += WG) { atomicStore(&hist[b], 0u); }
        workgroupBarrier();
        let hi_round = r < 4u;
        let sh = select(16u - 8u * (r - 4u), 24u - 8u * r, hi_round);
        for (var j = lid; j < n; j += WG) {
            let e = cand[(j / k) * KMAX + j % k];
            let lo = ~e.y & 0xffffffu;
            if ((e.x & st[2]) == st[0] && (lo & st[3]) == st[1]) {
                let dg = (select(lo, e.x, hi_round) >> sh) & 0xffu;
                atomicAdd(&hist[dg], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            var cum = 0u;
            for (var b = 255; b >= 0; b--) {
                let h = atomicLoad(&hist[b]);
                if (cum + h >= st[4]) {
                    if (hi_round) { st[0] |= u32(b) << sh; st[2] |= 0xffu << sh; }
                    else { st[1] |= u32(b) << sh; st[3] |= 0xffu << sh; }
                    st[4] -= cum;
                    break;
                }
                cum += h;
            }
        }
        workgroupBarrier();
    }
    // ---- gather the k candidates at or above the threshold, sort them ----
    for (var i = lid; i < P2; i += WG) { sk[i] = 0u; si[i] = 0xffffffffu; }
    if (lid == 0u) { atomicStore(&count, 0u); }
    workgroupBarrier();
    let th_hi = st[0];
    let th_lo = st[1];
    for (var j = lid; j < n; j += WG) {
        let e = cand[(j / k) * KMAX + j % k];
        let lo = ~e.y & 0xffffffu;
        if (e.x > th_hi || (e.x == th_hi && lo >= th_lo)) {
            let slot = atomicAdd(&count, 1u);
            if (slot < P2) { sk[slot] = e.x; si[slot] = e.y; }
        }
    }
    workgroupBarrier();
    bitonic(P2, lid);
    finish(k, lid);
}
