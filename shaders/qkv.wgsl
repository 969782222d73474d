{{ENABLES}}
// qkv_rope ({{FMT}}, heads {{HEADS}}): q = rope(x Wq^T) -> q; k = rope(x Wk^T) -> k_cache[pos + t];
// v = x Wv^T -> v_cache[pos + t], one dispatch; only the projections named in heads are computed
// and bound (the split keeps under maxStorageBuffersPerShaderStage). Workgroup (u, b): unit u of
// tokens b*TT .. b*TT+TT-1, units numbered over the sections of heads. A unit is 4 output rows:
//   Q / K unit: rows j, j+1, j+HALF, j+HALF+1 of one head (two RoPE pairs, and the two packed f16
//               words (j, j+1), (j+HALF, j+HALF+1) of the K cache row);
//   V unit:     rows 4v .. 4v+3 (two packed words).
// The weight reading (chunks of VEC words, dequantisation, dot) is matvec's (matvec_dot_*.wgsl,
// matvec_reduce_*.wgsl): the threads stride along the 4 rows, then reduce across the workgroup.
{{PARAMS}}
{{BINDINGS}}
const COLS: u32 = {{COLS}}u;   // hidden size = length of x
const GS: u32 = {{GS}}u;       // quantization group size (columns)
const GPR: u32 = {{GPR}}u;     // groups per row
const WPR: u32 = {{WPR}}u;     // u32 words per row
const VEC: u32 = {{VEC}}u;     // words per weight load
const NCH: u32 = {{NCH}}u;     // chunks per row
const CE: u32 = {{CE}}u;       // columns per chunk
const WG: u32 = {{WG}}u;
const TT: u32 = {{TT}}u;        // tokens per workgroup
const NACC: u32 = 4u * TT;     // partial sums per thread: (TT tokens, 4 rows)
const N_HEADS: u32 = {{N_HEADS}}u;
const N_KV: u32 = {{N_KV}}u;
const HD: u32 = {{HEAD_DIM}}u;
const HALF: u32 = HD / 2u;
const QD: u32 = N_HEADS * HD;  // q row length
const KVD: u32 = N_KV * HD;    // k / v row length
const QU: u32 = QD / 4u;       // units of Q
const KU: u32 = KVD / 4u;      // units of K (and of V)

var<private> xoff: u32;        // x row of the current token, in x elements / XV
{{XFNS}}
{{WFNS}}
{{REDUCE}}
{{ROPE_FN}}
{{KV_STORE}}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{{SGARGS}}) {
    let u = wid.x;
    let t0 = wid.y * TT;                 // first token of this workgroup
    if (t0 >= params.n_tok) { return; }  // workgroup-uniform
    let cnt = min(TT, params.n_tok - t0);  // tokens here (uniform: decode runs only token 0)
    // the unit's 4 rows in its weight (Q and K units: rope pairs of head h at j, j + 1)
{{UNIT}}
    let h = v / (HD / 4u);
    let j = 2u * (v % (HD / 4u));
    var rows = vec4<u32>(h * HD + j, h * HD + j + 1u, h * HD + j + HALF, h * HD + j + HALF + 1u);
    if (sect == 2u) { rows = vec4<u32>(4u * v, 4u * v + 1u, 4u * v + 2u, 4u * v + 3u); }
    // TT tokens x 4 rows written out (no private-array indexing): the loads can all be in flight,
    // and a weight chunk read for token 0 is reused from cache by the other tokens
{{ACC_DECL}}
    for (var ch = lid; ch < NCH; ch += WG) {
{{DOTS}}
    }
    let acc = array<f32, NACC>({{ACC_LIST}});
    reduce(lid{{SGCALL}}, acc);
    if (lid < cnt) {                      // invocation i stores token t0 + i
        let t = t0 + lid;
        let p = params.pos + t;
        let a = vec4<f32>(total(4u * lid), total(4u * lid + 1u), total(4u * lid + 2u),
                          total(4u * lid + 3u));
{{EPILOGUE}}
    }
}
