{{ENABLES}}
// {{OP}} ({{FMT}}, decode M = 1): {{SEMANTICS}}
// Each workgroup owns R consecutive rows (RB blocks of them, one after the other, with rb > 1:
// the thread's x chunk loaded once for all); its WG threads stride along those rows one chunk
// (VEC u32 words, coalesced) at a time, so every weight byte is read once; partial sums are
// reduced across the workgroup ({{REDUCTION}}). The loop is shaders/decode_loop.py's.
{{PARAMS}}
{{BINDINGS}}
const ROWS: u32 = {{ROWS}}u;   // rows of this weight (block)
const NW: u32 = {{NW}}u;       // weights read per row (2: gate_up's W1 and W3); NACC = R * NW (+ 1)
{{CONSTS}}const GX: u32 = {{GX}}u;       // workgroups along x (the grid folds into y past 65535)

{{XFNS}}
{{WFNS}}
{{REDVARS}}
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{{SGARGS}}) {
{{XHOIST}}{{BLOCK_OPEN}}
    let row0 = {{ROW0}};
    // per-row clamped indices: rows past the end are read in bounds and never stored
{{ROWS_DECL}}
{{LOOP}}    if (lid < R && row0 + lid < ROWS) {
        let r = lid;
{{STORE}}
    }
{{BLOCK_CLOSE}}
}
