// Decode attention, pass 1 of 2 (op "attention_decode"): split-K "flash-decoding".
// Workgroup (c, h): KV head h and chunk c of the context. All G = N_HEADS / N_KV query heads of
// the group share the K/V reads. The chunk is walked in tiles of TILE = WG positions with an online
// softmax: invocation t owns position tile0 + t in the score phase (a full K row, 16-byte loads);
// in the value phase it owns the 8 head-dim elements 8*(t % TPR).. of every PG-th position of the
// tile (one 16-byte V load per position, so many loads are in flight), and the PG position groups
// are folded once per chunk, at the end. The chunk's unnormalised partial
// (acc[HD], running max m, running sum l) per query head goes to `part`; pass 2
// (attention_combine.wgsl) merges the chunks. Scores are pre-scaled by 1/sqrt(HD) via q.
// The one-pass variant (direct=1, for short contexts) has MAX_CHUNKS = 1: one workgroup per KV
// head walks the whole context and writes acc / l straight to `out` (no `part`, no pass 2).
// The verify variant (nb > 0: a speculative verify pass's n_tok <= nb query rows) adds grid z =
// query row: row i is the query at position ctx - n_tok + i and runs exactly decode's arithmetic
// for the context ctx - n_tok + 1 + i (its own chunk layout; causal), q, part and out per row.
{{ENABLES}}
const N_HEADS: u32 = {{N_HEADS}}u;
const N_KV: u32 = {{N_KV}}u;
const G: u32 = N_HEADS / N_KV;     // query heads per KV head (GQA ratio)
const HD: u32 = {{HEAD_DIM}}u;
const WG: u32 = {{WG}}u;
const TILE: u32 = WG;              // positions per tile
const DPT: u32 = 8u;               // value phase: head-dim elements per invocation
const TPR: u32 = HD / DPT;         // invocations per V row
const PG: u32 = WG / TPR;          // position groups of the value phase
const NV: u32 = TILE / PG;        // positions per invocation per tile (= TPR)
const RED: u32 = max(G * TILE, PG * HD + PG);
const MAX_CHUNKS: u32 = {{MAX_CHUNKS}}u;
const PART_ROW: u32 = N_HEADS * MAX_CHUNKS * (HD + 2u);   // part floats a query row
const SCALE: f32 = {{SCALE}};      // 1 / sqrt(HD)
const NEG: f32 = -3.0e38;          // masked score (finite: exp(NEG - m) == 0, never NaN)

{{PARAMS}}
@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;        // (rows, N_HEADS * HD / 4) f32
{{KV_DECL}}
{{PART_DECL}}
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, G * HD / 4u>;  // (G, HD) scaled q of the group
var<workgroup> pw: array<f32, G * TILE>;           // (G, TILE) exp(score - m) of the tile
var<workgroup> red: array<f32, RED>;               // (G, TILE) max tree; (PG, HD) + (PG) fold

{{KV_FNS}}

// positions of one chunk: the same arithmetic as the Python grid function
fn chunk_tiles(ctx: u32) -> u32 {
    let n_tiles = (ctx + TILE - 1u) / TILE;
    return (n_tiles + MAX_CHUNKS - 1u) / MAX_CHUNKS;
}

{{TILE_MAX}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32{{SG_ARGS}}) {
    let c = wid.x;
    let h = wid.y;
{{ROW_SETUP}}
    let tpc = chunk_tiles(ctx);
    let p_begin = c * tpc * TILE;
    let p_end = min(ctx, p_begin + tpc * TILE);
    if (p_begin >= p_end) { return; }  // workgroup-uniform

    for (var i = t; i < G * HD / 4u; i += WG) {
        qs[i] = q[row * (N_HEADS * HD / 4u) + h * G * HD / 4u + i] * SCALE;
    }
    workgroupBarrier();

    var m = array<f32, G>();          // running max per query head (same in every invocation)
    for (var g = 0u; g < G; g++) { m[g] = NEG; }
    // per query head g: l{g} running sum of exp over this position group, acc{g}a / acc{g}b the
    // values of elements 8*dg .. 8*dg+7. Scalars named per head (written out by Python), not
    // arrays indexed by a loop variable: those went to local memory, and the time of a
    // workgroup grew with G (H200: 23 us at G=4, 37 us at G=8 for any tile size)
{{ACC_DECL}}
    let dg = t % TPR;
    let pg = t / TPR;

    for (var p0 = p_begin; p0 < p_end; p0 += TILE) {
        // ---- V loads of this tile issued first: they do not depend on the scores, and all
        //      NV (= TPR) of them are in flight with the K loads (one memory round trip per tile;
        //      positions past the context read the last valid row and get weight 0) ----
{{V_PREFETCH}}
        // ---- scores of position p0 + t for the G heads ----
        let p = p0 + t;
        var s = array<f32, G>();
        for (var g = 0u; g < G; g++) { s[g] = NEG; }
        if (p < p_end) { s = kdot(p, h); }
        // ---- tile max per head, new running max, weights ----
        let tmax = tile_max(s, t{{SG_CALL}});
        var alpha = array<f32, G>();
        for (var g = 0u; g < G; g++) {
            let mn = max(m[g], tmax[g]);
            alpha[g] = exp(m[g] - mn);
            m[g] = mn;
            pw[g * TILE + t] = exp(s[g] - mn);
        }
        workgroupBarrier();
        // ---- values: 8 elements of positions pg, pg + PG, ... of the tile ----
{{ACC_RESCALE}}
{{V_ACCUM}}
        workgroupBarrier();  // pw and red are rewritten by the next tile
    }

    // ---- fold the PG position groups, one query head at a time; write the partial ----
    let o = pg * HD + dg * DPT;
{{FOLD}}
}

// the fold of query head g (its acc a, b and sum lg; running max mg): sum over the PG position
// groups, write the chunk's partial. Called in uniform control flow (it has barriers).
fn fold(g: u32, h: u32, row: u32, c: u32, t: u32, o: u32, pg: u32, dg: u32, a: vec4<f32>, b: vec4<f32>,
        lg: f32, mg: f32) {
    red[o] = a.x;
    red[o + 1u] = a.y;
    red[o + 2u] = a.z;
    red[o + 3u] = a.w;
    red[o + 4u] = b.x;
    red[o + 5u] = b.y;
    red[o + 6u] = b.z;
    red[o + 7u] = b.w;
    if (dg == 0u) { red[PG * HD + pg] = lg; }
    workgroupBarrier();
    let hq = h * G + g;
{{FOLD_STORE}}
    workgroupBarrier();
}
