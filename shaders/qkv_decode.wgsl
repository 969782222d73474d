{{ENABLES}}
// qkv_rope_decode ({{FMT}}, heads {{HEADS}}, decode M = 1): q = rope(x Wq^T, pos) -> q;
// k = rope(x Wk^T, pos) -> k_cache[pos]; v = x Wv^T -> v_cache[pos]; only the projections named
// in heads are computed and bound. Workgroup u (numbered over the sections of heads; the grid
// folds into y past 65535) owns R = 2P output rows of one section:
//   Q / K unit: rows j .. j+P-1 and j+HALF .. j+HALF+P-1 of one head (P RoPE pairs; P is even,
//               so the packed f16 words (j+2i, j+2i+1) of the K cache row are whole);
//   V unit:     rows R*v .. R*v+R-1.
// The inner loop is the decode matvec's (shaders/decode_loop.py): the threads stride along the R rows
// one chunk of VEC words at a time, the chunk's x is loaded (and, on the int8 paths, quantized)
// once for all R rows, one unrolled dot per row; then a {{REDUCTION}} reduction, and thread
// i < P/2 rotates and stores rows 2i, 2i+1 with their partners 2i+P, 2i+1+P.
{{PARAMS}}
{{BINDINGS}}
{{CONSTS}}const P: u32 = R / 2u;         // RoPE pairs per Q / K workgroup
const GX: u32 = {{GX}}u;       // workgroups along x
const UNITS: u32 = {{UNITS}}u; // workgroups doing work (the folded grid may have a few more)
const N_HEADS: u32 = {{N_HEADS}}u;
const N_KV: u32 = {{N_KV}}u;
const HD: u32 = {{HEAD_DIM}}u;
const HALF: u32 = HD / 2u;
const QD: u32 = N_HEADS * HD;  // q row length
const KVD: u32 = N_KV * HD;    // k / v row length (one cache position)

{{XFNS}}
{{WFNS}}
{{REDVARS}}
{{ROPE_FN}}
{{KV_STORE}}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{{SGARGS}}) {
    let u = wid.x + wid.y * GX;
    if (u >= UNITS) { return; }          // workgroup-uniform: padding of the folded grid
    // sect: 0 Q, 1 K, 2 V; v: unit within its section
{{UNIT}}
    let qk = sect != 2u;
    let h = v / (HALF / P);              // head of a Q / K unit
    let j = (v % (HALF / P)) * P;        // its first rotate-half index
    let base = select(R * v, h * HD + j, qk);   // first row of the unit in its weight
    let off2 = select(P, HALF, qk);      // rows P .. R-1 of the unit start at base + off2
    // the unit's R rows (all in range: R divides head_dim)
{{ROWS_DECL}}
{{LOOP}}    if (lid < P / 2u) {
        let i = 2u * lid;                // rows i, i+1 (first half) and i+P, i+1+P (partners)
        let p = params.pos;              // n_tok is 1: the one token sits at pos
        let a = vec4<f32>(total(i), total(i + 1u), total(i + P), total(i + 1u + P));
{{EPILOGUE}}
    }
}
