{{ENABLES}}
// {{OP}} ({{FMT}}, prefill, on the GPU's matrix units): {{SEMANTICS}}
// chromium-experimental-subgroup-matrix: a workgroup of 8 subgroups x 32 invocations computes a TM tokens x TN rows
// tile of the output. Per K step it stages TK columns of x (TM x TK, f32 -> f16) and of each weight (TN x TK,
// dequantized once, f16) in shared memory, k contiguous with XS-element rows (padded: fewer bank conflicts); subgroup
// (sm, sn) of the 2 x 4 grid then multiplies its FM x FN blocks of MM x MN results with MK-deep f16 matrices
// accumulating in f32 (subgroupMatrixMultiplyAccumulate). The results go through shared memory one block at a time
// (a subgroup matrix has no element access) to the per-element store, which masks partial tiles.
// Prefetch (when the staging divides evenly among the 256 invocations): the next K step's x and weight values are
// loaded into registers before this step's multiplies, so their memory latency overlaps the matrix work.
// Matrix offsets come from @builtin(subgroup_id): Chromium requires them subgroup-uniform, and lid / 32 is not
// provably so.
{{PARAMS}}
{{BINDINGS}}
const ROWS: u32 = {{ROWS}}u;   // rows of the weight = output features
const COLS: u32 = {{COLS}}u;   // columns = input features (K)
const GS: u32 = {{GS}}u;       // quantization group size
const GPR: u32 = {{GPR}}u;     // groups per row
const WPR: u32 = {{WPR}}u;     // u32 words per row
const TM: u32 = {{TM}}u;       // tokens per tile
const TN: u32 = {{TN}}u;       // rows per tile
const TK: u32 = {{TK}}u;       // columns per K step
const XS: u32 = {{XS}}u;       // shared row stride (elements) of the staged tiles
const NK4: u32 = TK / 4u;      // vec4 columns per K step
const SMT: u32 = TM / 2u;      // tokens per subgroup (2 subgroup rows)
const SNT: u32 = TN / 4u;      // weight rows per subgroup (4 subgroup columns)
const MN: u32 = {{MN}}u;       // result block columns (weight rows)
const MM: u32 = {{MM}}u;       // result block rows (tokens)

var<workgroup> xs: array<f16, TM * XS>;   // (TM, XS) x tile, token-major, k contiguous
{{TILES}}
{{WFNS}}
// 4 consecutive x values of token t from column 4*c4, zero past the end
{{XLOAD}}
// 4 consecutive dequantized weights of row `row` from column 4*c4, zero past the end
fn wload4_{{W0}}(row: u32, c4: u32) -> vec4<f32> { return {{WLOAD0}}; }
{{WLOAD_MORE}}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = wid.x * TN;            // first row of the tile
    let t0 = wid.y * TM;            // first token of the tile
    let sm = sg / 4u;               // this subgroup's tokens: t0 + SMT sm ..
    let sn = sg % 4u;               // this subgroup's rows: n0 + SNT sn ..
    let n_tok = params.n_tok;
{{ACC_DECL}}
{{KLOOP}}
{{STORE}}
}
