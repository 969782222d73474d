// Decode attention, pass 2 of 2 (op "attention_combine"): merge the per-chunk partials of
// attention_decode.wgsl. Workgroup hq: query head; invocation d: head-dim element.
// out[d] = sum_c exp(m_c - M) acc_c[d] / sum_c exp(m_c - M) l_c,  M = max_c m_c.
const N_HEADS: u32 = {{N_HEADS}}u;
const HD: u32 = {{HEAD_DIM}}u;
const WG: u32 = {{WG}}u;
const TILE: u32 = {{TILE}}u;       // positions per tile of pass 1
const MAX_CHUNKS: u32 = {{MAX_CHUNKS}}u;

{{PARAMS}}
@group(0) @binding(0) var<storage, read> part: array<f32>;        // as written by attention_decode
@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // (N_HEADS * HD) f32
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let hq = wid.x;
    let n_tiles = (params.ctx + TILE - 1u) / TILE;
    let tpc = (n_tiles + MAX_CHUNKS - 1u) / MAX_CHUNKS;
    let n_chunks = (n_tiles + tpc - 1u) / tpc;
    let ml = N_HEADS * MAX_CHUNKS * HD + hq * MAX_CHUNKS * 2u;
    var mx = -3.0e38;
    for (var c = 0u; c < n_chunks; c++) { mx = max(mx, part[ml + 2u * c]); }
    var den = 0.0;
    for (var c = 0u; c < n_chunks; c++) { den += exp(part[ml + 2u * c] - mx) * part[ml + 2u * c + 1u]; }
    for (var d = t; d < HD; d += WG) {
        var num = 0.0;
        for (var c = 0u; c < n_chunks; c++) {
            num += exp(part[ml + 2u * c] - mx) * part[(hq * MAX_CHUNKS + c) * HD + d];
        }
        out[hq * HD + d] = num / den;
    }
}
