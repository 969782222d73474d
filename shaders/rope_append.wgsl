// rope_append (kv {{KV}}): the prefill tail of the QKV projection. The three projections ran as
// tiled matmuls into q, k_new, v_new; this pass rotates q in place and appends rope(k_new) and
// v_new to the caches at positions pos .. pos + n_tok - 1.
// Invocation (i, t), token t (position pos + t):
//   i <  QP:            RoPE pair i of q's flattened (head, j < HALF): q[j], q[j + HALF] rotated
//                       in place (one invocation owns both elements of its pair);
//   QP <= i < QP + KW:  word w = i - QP of the k/v cache row: elements e = 2w, 2w + 1 (same head,
//                       same half as HALF is even). K reads its RoPE partners from k_new, which
//                       this pass never writes, so there is no in-place hazard.
{{PARAMS}}
@group(0) @binding(0) var<storage, read_write> q: array<f32>;      // (n_tok, N_HEADS * HD) f32
@group(0) @binding(1) var<storage, read> k_new: array<f32>;        // (n_tok, N_KV * HD) f32
@group(0) @binding(2) var<storage, read> v_new: array<f32>;        // (n_tok, N_KV * HD) f32
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;     // (HD / 2) f32, llama3-scaled or plain
@group(0) @binding(4) var<storage, read_write> k_cache: array<{{KV_TY}}>;  // (max_ctx, N_KV, HD) {{KV}}
@group(0) @binding(5) var<storage, read_write> v_cache: array<{{KV_TY}}>;  // (max_ctx, N_KV, HD) {{KV}}
@group(0) @binding(6) var<uniform> params: Params;

const N_HEADS: u32 = {{N_HEADS}}u;
const N_KV: u32 = {{N_KV}}u;
const HD: u32 = {{HEAD_DIM}}u;
const HALF: u32 = HD / 2u;
const QD: u32 = N_HEADS * HD;
const KVD: u32 = N_KV * HD;
const QP: u32 = N_HEADS * HALF;   // q pairs per token
const KW: u32 = KVD / 2u;         // cache words (2 elements) per token
const WG: u32 = {{WG}}u;

{{ROPE_FN}}
{{KV_STORE}}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (t >= params.n_tok || i >= QP + KW) { return; }
    let p = params.pos + t;
    if (i < QP) {
        let h = i / HALF;
        let j = i % HALF;
        let o = t * QD + h * HD + j;
        let r = rope_rotate(vec2<f32>(q[o], q[o + HALF]), rope_cs(p, inv_freq[j]));
        q[o] = r.x;
        q[o + HALF] = r.y;
        return;
    }
    let e = 2u * (i - QP);            // element of the (N_KV * HD) row
    let d = e % HD;                   // within its head: d, d + 1 in the same half
    let src = t * KVD + e;
    let first = d < HALF;
    let partner = select(src - HALF, src + HALF, first);
    let j = select(d - HALF, d, first);
    // rotate-half: first half x*c - x'*s, second half x*c + x'*s (x' = the partner element)
    let sgn = select(1.0, -1.0, first);
    let c0 = rope_cs(p, inv_freq[j]);
    let c1 = rope_cs(p, inv_freq[j + 1u]);
    let k0 = k_new[src] * c0.x + sgn * k_new[partner] * c0.y;
    let k1 = k_new[src + 1u] * c1.x + sgn * k_new[partner + 1u] * c1.y;
    store_kv(0u, p * KVD + e, vec2<f32>(k0, k1));
    store_kv(1u, p * KVD + e, vec2<f32>(v_new[src], v_new[src + 1u]));
}
