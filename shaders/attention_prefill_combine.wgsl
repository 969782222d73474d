// attention_prefill_combine: merges the split variant of attention_prefill (split=1). Workgroup
// (t, hq) combines query row t of head hq over params.splits partials (acc unnormalised, m, l):
// out = sum_z exp(m_z - M) acc_z / sum_z exp(m_z - M) l_z, M = max_z m_z. A split whose positions
// were all past the row's causal end holds m = NEG and weighs exp(NEG - M) = 0, whatever its l and
// acc (split 0 always holds position 0, so M is finite).
const N_HEADS: u32 = {{N_HEADS}}u;
const HD: u32 = {{HEAD_DIM}}u;
const WG: u32 = {{WG}}u;
const MAX_SPLITS: u32 = {{MAX_SPLITS}}u;

{{PARAMS}}
@group(0) @binding(0) var<storage, read> part: array<f32>;         // (n_tok, N_HEADS, MAX_SPLITS, HD + 2) f32: acc, then m, l
@group(0) @binding(1) var<storage, read_write> out: array<f32>;    // (n_tok, N_HEADS * HD) f32
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x;
    let hq = wid.y;
    if (t >= params.n_tok) { return; }   // workgroup-uniform
    let base = (t * N_HEADS + hq) * MAX_SPLITS;
    var mm = -3.0e38;
    for (var z = 0u; z < params.splits; z++) { mm = max(mm, part[(base + z) * (HD + 2u) + HD]); }
    var ls = 0.0;
    for (var z = 0u; z < params.splits; z++) {
        let o = (base + z) * (HD + 2u) + HD;
        ls += exp(part[o] - mm) * part[o + 1u];
    }
    for (var d = lid; d < HD; d += WG) {
        var s = 0.0;
        for (var z = 0u; z < params.splits; z++) {
            let o = (base + z) * (HD + 2u);
            s += exp(part[o + HD] - mm) * part[o + d];
        }
        out[(t * N_HEADS + hq) * HD + d] = s / ls;
    }
}
