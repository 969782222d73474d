// RMSNorm (op "rmsnorm") and residual add + RMSNorm (op "add_rmsnorm").
// One workgroup per token row; each invocation owns the elements i = lid + k*WG of the row
// (as VT = f32 or vec4<f32>). Rows of up to 16*WG elements: the invocation's loads (x, delta, w)
// are written out and all in flight at once, and the values stay in registers for the second
// pass; longer rows loop (and re-read exactly what this invocation wrote: no barrier needed).
{{ENABLES}}
const HIDDEN_V: u32 = {{HIDDEN_V}}u;   // row length in VT units (hidden / vec width)
const EPS: f32 = {{EPS}};
const INV_HIDDEN: f32 = {{INV_HIDDEN}};
const WG: u32 = {{WG}}u;

{{PARAMS}}
{{BINDINGS}}
@group(0) @binding({{PARAMS_BINDING}}) var<uniform> params: Params;

fn sq(v: VT) -> f32 { {{SQ}} }

{{REDUCE}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{{SG_ARGS}}) {
    let t = wid.x;                 // token row
    if (t >= params.n_tok) { return; }  // workgroup-uniform: grids may be rounded up
    let base = t * HIDDEN_V;
{{BODY}}
}
