{{ENABLES}}
// Decode attention, pass 2 of 2 (op "attention_combine"): merge the per-chunk partials of
// attention_decode.wgsl. Workgroup (hq, row): query head, query row (row 0 only in decode; the
// verify variant, nb > 0, has a row per query of the pass with its own context length).
// out[d] = sum_c exp(m_c - M) acc_c[d] / sum_c exp(m_c - M) l_c,  M = max_c m_c.
// The chunk maxima / sums are read one chunk per invocation and reduced in workgroup memory;
// the values by CS = WG / HD chunk lanes per element, UNROLL independent loads at a time (a
// one-load-per-iteration loop costs one memory round trip per chunk).
const N_HEADS: u32 = {{N_HEADS}}u;
const HD: u32 = {{HEAD_DIM}}u;
const WG: u32 = {{WG}}u;
const CS: u32 = WG / HD;           // chunk lanes per head-dim element
const TILE: u32 = {{TILE}}u;       // positions per tile of pass 1
const MAX_CHUNKS: u32 = {{MAX_CHUNKS}}u;
const PART_ROW: u32 = N_HEADS * MAX_CHUNKS * (HD + 2u);   // part floats a query row
const NEG: f32 = -3.0e38;

{{PARAMS}}
@group(0) @binding(0) var<storage, read> part: array<f32>;        // as written by attention_decode
@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // (rows, N_HEADS * HD) f32
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> sw: array<f32, MAX_CHUNKS>;   // exp(m_c - M) per chunk
var<workgroup> red: array<f32, WG>;

// workgroup max / sum, every invocation gets the result (subgroup variant where available:
// two barriers instead of a log2(WG)-level tree)
{{FOLDS}}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32{{SG_ARGS}}) {
    let hq = wid.x;
{{ROW_SETUP}}
    let n_tiles = (ctx + TILE - 1u) / TILE;
    let tpc = (n_tiles + MAX_CHUNKS - 1u) / MAX_CHUNKS;
    let n_chunks = (n_tiles + tpc - 1u) / tpc;
    let ml = row * PART_ROW + N_HEADS * MAX_CHUNKS * HD + hq * MAX_CHUNKS * 2u;
    var mx = NEG;
    for (var c = t; c < n_chunks; c += WG) { mx = max(mx, part[ml + 2u * c]); }
    let big = wg_max(mx, t{{SG_CALL}});
    var dl = 0.0;
    for (var c = t; c < n_chunks; c += WG) {
        let w = exp(part[ml + 2u * c] - big);
        sw[c] = w;
        dl += w * part[ml + 2u * c + 1u];
    }
    let den = wg_sum(dl, t{{SG_CALL}});   // its barriers also publish sw
    let d = t % HD;
    let cs = t / HD;
    let base = row * PART_ROW + hq * MAX_CHUNKS * HD + d;
    var num = 0.0;
    for (var c0 = cs; c0 < n_chunks; c0 += CS * {{UNROLL}}u) {
{{VALUE_LOADS}}
    }
    red[t] = num;
    workgroupBarrier();
    if (cs == 0u) {
        var s = 0.0;
        for (var i = 0u; i < CS; i++) { s += red[i * HD + d]; }
        out[(row * N_HEADS + hq) * HD + d] = s / den;
    }
}
