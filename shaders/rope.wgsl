// In-place rotate-half RoPE (HF layout) on x (n_tok, N_HEADS * HEAD_DIM), op "rope".
// Invocation (i, t): pair i of the flattened (head, i < HEAD_DIM/2) index, token row t; it rotates
// elements (h*HEAD_DIM + j, h*HEAD_DIM + j + HALF) by the angle (pos + t) * inv_freq[j].
const N_HEADS: u32 = {{N_HEADS}}u;
const HEAD_DIM: u32 = {{HEAD_DIM}}u;
const HALF: u32 = HEAD_DIM / 2u;
const WG: u32 = {{WG}}u;

{{PARAMS}}
@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // (n_tok, N_HEADS * HEAD_DIM) f32
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;   // (HEAD_DIM / 2) f32, llama3-scaled
@group(0) @binding(2) var<uniform> params: Params;

{{ROPE_FN}}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let p = gid.x;               // flattened (head, pair)
    let t = gid.y;               // token
    if (p >= N_HEADS * HALF || t >= params.n_tok) { return; }
    let h = p / HALF;
    let j = p % HALF;
    let i0 = t * N_HEADS * HEAD_DIM + h * HEAD_DIM + j;
    let r = rope_rotate(vec2<f32>(x[i0], x[i0 + HALF]), rope_cs(params.pos + t, inv_freq[j]));
    x[i0] = r.x;
    x[i0 + HALF] = r.y;
}
