{{ENABLES}}
// {{OP}} ({{FMT}}, prefill, tiled): {{SEMANTICS}}
// A workgroup computes a TM tokens x TN rows tile of the output. Per K step it stages TK columns
// of x (TM x TK) and of each weight (TN x TK, dequantized once) in shared memory, then every
// thread accumulates an MT x 4 register block (MT = 4 or 8 tokens): MT/4 + 1 vec4 shared loads per
// 4 MT FMAs.
// Accumulators are separate variables (generated unrolled), never indexed arrays.
{{PARAMS}}
{{BINDINGS}}
const ROWS: u32 = {{ROWS}}u;   // rows of the weight = output features
const COLS: u32 = {{COLS}}u;   // columns = input features (K)
const GS: u32 = {{GS}}u;       // quantization group size
const GPR: u32 = {{GPR}}u;     // groups per row
const WPR: u32 = {{WPR}}u;     // u32 words per row
const MT: u32 = {{MT}}u;        // tokens per thread
const TM: u32 = 16u * MT;      // tokens per tile
const TN: u32 = 64u;           // rows per tile
const TK: u32 = {{TK}}u;       // columns per K step
const NK4: u32 = TK / 4u;      // vec4 columns per K step

{{TILES}}
{{WFNS}}
// 4 consecutive x values of token t from column 4*c4, zero past the end
{{XLOAD}}
// 4 consecutive dequantized weights of row `row` from column 4*c4, zero past the end
fn wload4_{{W0}}(row: u32, c4: u32) -> vec4<f32> { return {{WLOAD0}}; }
{{WLOAD_MORE}}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * TN;            // first row of the tile
    let t0 = wid.y * TM;            // first token of the tile
    let tx = lid % 16u;             // this thread's rows: n0 + 4 tx .. + 3
    let ty = lid / 16u;             // this thread's tokens: t0 + MT ty .. + MT-1
    let n_tok = params.n_tok;
{{ACC_DECL}}
    for (var k0 = 0u; k0 < COLS; k0 += TK) {
        // stage: (TM + NW * TN) x NK4 vec4 loads spread over 256 threads, stored k-major
        for (var i = lid; i < TM * NK4; i += 256u) {
            let m = i / NK4;
            let k4 = i % NK4;
            var v = vec4<{{ST}}>(0.0);
            if (t0 + m < n_tok) { v = vec4<{{ST}}>(xload4(t0 + m, k0 / 4u + k4)); }
            // transpose into k-major rows of TM tokens (xs[k][m])
            xs[(4u * k4 * TM + m) / 4u][m % 4u] = v.x;
            xs[((4u * k4 + 1u) * TM + m) / 4u][m % 4u] = v.y;
            xs[((4u * k4 + 2u) * TM + m) / 4u][m % 4u] = v.z;
            xs[((4u * k4 + 3u) * TM + m) / 4u][m % 4u] = v.w;
        }
        for (var i = lid; i < TN * NK4; i += 256u) {
            let n = i / NK4;
            let k4 = i % NK4;
            let row = min(n0 + n, ROWS - 1u);   // past-the-end rows: in-bounds garbage, not stored
{{STAGE_W}}
        }
        workgroupBarrier();
{{INNER}}
        workgroupBarrier();
    }
    // write the 4 x 4 block (unrolled: accumulators stay in registers)
{{STORE}}
}
