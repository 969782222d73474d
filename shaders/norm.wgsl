// RMSNorm (op "rmsnorm") and residual add + RMSNorm (op "add_rmsnorm").
// One workgroup per token row; each invocation owns the elements i = lid + k*WG of the row
// (as VT = f32 or vec4<f32>), so the second pass re-reads exactly what it wrote in the first:
// no barrier is needed for the in-place residual update of x.
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
    // pass 1: (residual add) and sum of squares
    var acc = 0.0;
    for (var i = lid; i < HIDDEN_V; i += WG) {
        {{LOAD}}
        acc += sq(v);
    }
    let total = wg_sum(acc, lid{{SG_CALL}});
    let r = inverseSqrt(total * INV_HIDDEN + EPS);
    // pass 2: scale by 1/rms and the norm weight
    for (var i = lid; i < HIDDEN_V; i += WG) {
        out[base + i] = x[base + i] * r * w[i];
    }
}
