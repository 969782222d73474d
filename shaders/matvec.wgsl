{{ENABLES}}
// {{OP}} ({{FMT}}, decode M = 1): {{SEMANTICS}}
// Each workgroup owns R consecutive rows; its WG threads stride along those rows one chunk
// (VEC u32 words, coalesced) at a time, so every weight byte is read once; partial sums are
// reduced across the workgroup ({{REDUCTION}}).
{{PARAMS}}
{{BINDINGS}}
const ROWS: u32 = {{ROWS}}u;   // rows of this weight (block)
const COLS: u32 = {{COLS}}u;   // columns = length of x
const GS: u32 = {{GS}}u;       // quantization group size (columns)
const GPR: u32 = {{GPR}}u;     // groups per row = COLS / GS
const WPR: u32 = {{WPR}}u;     // u32 words per row
const VEC: u32 = {{VEC}}u;     // words per weight load (4: vec4<u32>, 1: u32)
const NCH: u32 = {{NCH}}u;     // chunks per row = WPR / VEC
const CE: u32 = {{CE}}u;       // columns per chunk
const WG: u32 = {{WG}}u;       // threads per workgroup
const R: u32 = {{R}}u;         // rows per workgroup
const NW: u32 = {{NW}}u;       // weights read per row (2: gate_up's W1 and W3)
const NACC: u32 = {{NACC}}u;     // partial sums per thread: R * NW (+ 1: fused norm's sum x^2)
const GX: u32 = {{GX}}u;       // workgroups along x (the grid folds into y past 65535)

{{XFNS}}
{{WFNS}}
{{REDVARS}}
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{{SGARGS}}) {
    let row0 = (wid.x + wid.y * GX) * R;
    // per-row clamped indices: rows past the end are read in bounds and never stored
{{ROWS_DECL}}
    // partial sums, one register each (generated unrolled: no dynamically indexed arrays,
    // which GPU compilers may spill to local memory)
{{ACC_DECL}}
    for (var ch = lid; ch < NCH; ch += WG) {
        // this chunk's x, loaded once and reused for all R rows
{{XLOAD}}
{{ACCUM}}
    }
{{REDUCE}}
    if (lid < R && row0 + lid < ROWS) {
        let r = lid;
{{STORE}}
    }
}
