// Decode attention, pass 1 of 2 (op "attention_decode"): split-K "flash-decoding".
// Workgroup (c, h): KV head h and chunk c of the context. All G = N_HEADS / N_KV query heads of
// the group share the K/V reads. The chunk is walked in tiles of TILE = WG positions with an online
// softmax: invocation t owns position tile0 + t in the score phase (a full K row, vec4 loads) and
// head-dim element d = t % HD in the value phase. The chunk's unnormalised partial
// (acc[HD], running max m, running sum l) per query head goes to `part`; pass 2
// (attention_combine.wgsl) merges the chunks. Scores are pre-scaled by 1/sqrt(HD) via q.
{{ENABLES}}
const N_HEADS: u32 = {{N_HEADS}}u;
const N_KV: u32 = {{N_KV}}u;
const G: u32 = N_HEADS / N_KV;     // query heads per KV head (GQA ratio)
const HD: u32 = {{HEAD_DIM}}u;
const WG: u32 = {{WG}}u;
const TILE: u32 = WG;              // positions per tile
const VSPLIT: u32 = WG / HD;       // value phase: invocations per head-dim element (1, 2)
const MAX_CHUNKS: u32 = {{MAX_CHUNKS}}u;
const SCALE: f32 = {{SCALE}};      // 1 / sqrt(HD)
const NEG: f32 = -3.0e38;          // masked score (finite: exp(NEG - m) == 0, never NaN)

{{PARAMS}}
@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;        // (N_HEADS * HD / 4) f32
{{KV_DECL}}
@group(0) @binding(3) var<storage, read_write> part: array<f32>;     // (N_HEADS, MAX_CHUNKS, HD) acc, then (N_HEADS, MAX_CHUNKS, 2) (m, l)
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, G * HD / 4u>;  // (G, HD) scaled q of the group
var<workgroup> pw: array<f32, G * TILE>;           // (G, TILE) exp(score - m) of the tile
var<workgroup> red: array<f32, G * TILE>;          // (G, TILE) max tree / value-phase halves

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
    let ctx = params.ctx;
    let tpc = chunk_tiles(ctx);
    let p_begin = c * tpc * TILE;
    let p_end = min(ctx, p_begin + tpc * TILE);
    if (p_begin >= p_end) { return; }  // workgroup-uniform

    for (var i = t; i < G * HD / 4u; i += WG) {
        qs[i] = q[h * G * HD / 4u + i] * SCALE;
    }
    workgroupBarrier();

    var m: array<f32, G>;     // running max per query head (same in every invocation)
    var l: array<f32, G>;     // running sum of exp
    var acc: array<f32, G>;   // value accumulator of element d, per query head
    for (var g = 0u; g < G; g++) { m[g] = NEG; l[g] = 0.0; acc[g] = 0.0; }
    let d = t % HD;
    let vpart = t / HD;

    for (var p0 = p_begin; p0 < p_end; p0 += TILE) {
        // ---- scores of position p0 + t for the G heads ----
        let p = p0 + t;
        var s: array<f32, G>;
        for (var g = 0u; g < G; g++) { s[g] = NEG; }
        if (p < p_end) { s = kdot(p, h); }
        // ---- tile max per head, new running max, weights ----
        let tmax = tile_max(s, t{{SG_CALL}});
        var alpha: array<f32, G>;
        for (var g = 0u; g < G; g++) {
            let mn = max(m[g], tmax[g]);
            alpha[g] = exp(m[g] - mn);
            m[g] = mn;
            pw[g * TILE + t] = exp(s[g] - mn);
        }
        workgroupBarrier();
        // ---- values: element d over this invocation's share of the tile ----
        let n = min(TILE, p_end - p0);
        for (var g = 0u; g < G; g++) { acc[g] *= alpha[g]; l[g] *= alpha[g]; }
        for (var j = vpart; j < n; j += VSPLIT) {
            let v = vload(p0 + j, h, d);
            for (var g = 0u; g < G; g++) {
                let w = pw[g * TILE + j];
                acc[g] += w * v;
                l[g] += w;       // this share's sum; the shares are folded at the end
            }
        }
        workgroupBarrier();  // pw and red are rewritten by the next tile
    }

    // ---- fold the VSPLIT value shares (acc and l), write the partial ----
    if (VSPLIT > 1u) {
        let stride = G * (HD + 1u);   // (VSPLIT - 1) slots of (G, HD) acc + (G) l, inside red
        if (vpart > 0u) {
            for (var g = 0u; g < G; g++) {
                red[(vpart - 1u) * stride + g * HD + d] = acc[g];
                if (d == 0u) { red[(vpart - 1u) * stride + G * HD + g] = l[g]; }
            }
        }
        workgroupBarrier();
        if (vpart == 0u) {
            for (var k = 1u; k < VSPLIT; k++) {
                for (var g = 0u; g < G; g++) {
                    acc[g] += red[(k - 1u) * stride + g * HD + d];
                    l[g] += red[(k - 1u) * stride + G * HD + g];
                }
            }
        }
    }
    if (vpart == 0u) {
        for (var g = 0u; g < G; g++) {
            let hq = h * G + g;
            part[(hq * MAX_CHUNKS + c) * HD + d] = acc[g];
            if (d == 0u) {
                let o = N_HEADS * MAX_CHUNKS * HD + (hq * MAX_CHUNKS + c) * 2u;
                part[o] = m[g];
                part[o + 1u] = l[g];
            }
        }
    }
}
