// embed ({{FMT}}): x[t, :] = W[ids[t] - row_start, :] for the tokens whose id lies in this row
// block [row_start, row_start + rows); other tokens are left untouched (another block's dispatch
// writes them). One thread writes 4 consecutive columns of one token.
{{PARAMS}}
{{BINDINGS}}
const COLS: u32 = {{COLS}}u;   // hidden size
const GS: u32 = {{GS}}u;       // quantization group size
const GPR: u32 = {{GPR}}u;     // groups per row
const WPR: u32 = {{WPR}}u;     // u32 words per row
const NC4: u32 = {{NC4}}u;     // 4-column groups per row = ceil(COLS / 4)
const WG: u32 = 64u;

{{WFNS}}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = gid.x;        // columns 4*c4 .. 4*c4+3
    let t = gid.y;         // token
    if (c4 >= NC4 || t >= params.n_tok) { return; }
    let id = ids[t];
    if (id < params.row_start || id - params.row_start >= params.rows) { return; }
    let row = id - params.row_start;
{{COPY}}
}
