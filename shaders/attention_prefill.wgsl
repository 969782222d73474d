// Prefill attention (op "attention_prefill"): causal, tiled, online softmax (flash-attention style).
// Workgroup (x, hq): query tokens t0 = x*TQ .. t0+TQ-1 of query head hq; query t sees cache positions
// [0, pos + t]. Invocation (r = lid / TPR, j = lid % TPR) owns query row r: it scores keys
// kk = j + TPR*i of each TK-key tile and accumulates the head-dim vec4s j + TPR*i. K and V of a tile
// are loaded together at its start (16-byte loads, all in flight at once), staged in workgroup
// memory as f32 (from f16 or f32 storage) one after the other; scores go through `pw` so every
// invocation of a row sees the row's max. ST: f32, or f16 in the shader-f16 variant (tiles and
// the score dot products in f16, scores and values accumulated in f32).
// Split variant (split=1, long cached contexts): workgroup z walks only positions
// [z * span, (z + 1) * span) and stores its unnormalised partial (acc, m, l) into `part`;
// attention_prefill_combine merges the splits (more workgroups walking shorter ranges). A row's
// valid positions are a prefix, so a split either starts with one (m is finite before any masked
// score) or has none: then m stays NEG and the combine weighs the split exp(NEG - M) = 0.
{{ENABLES}}
const N_HEADS: u32 = {{N_HEADS}}u;
const N_KV: u32 = {{N_KV}}u;
const G: u32 = N_HEADS / N_KV;
const HD: u32 = {{HEAD_DIM}}u;
const HD4: u32 = HD / 4u;
const WG: u32 = {{WG}}u;
const TQ: u32 = {{TQ}}u;           // query rows per workgroup
const TK: u32 = {{TK}}u;           // keys per tile
const TPR: u32 = WG / TQ;          // invocations per query row
const KROW4: u32 = HD4 + 1u;       // kt row stride in vec4, padded: the TPR scorers of a row spread over banks
const KPT: u32 = TK / TPR;         // keys scored per invocation and tile
const DPT4: u32 = HD4 / TPR;       // head-dim vec4s accumulated per invocation
const SCALE: f32 = {{SCALE}};
const NEG: f32 = -3.0e38;

{{PARAMS}}
@group(0) @binding(0) var<storage, read> q: array<f32>;            // (n_tok, N_HEADS * HD) f32
{{KV_DECL}}
{{OUT_DECL}}
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> qs: array<vec4<ST>, TQ * HD4>;    // (TQ, HD) scaled queries
var<workgroup> kt: array<vec4<ST>, TK * KROW4>;  // (TK, HD + 4) K tile, then V tile
var<workgroup> pw: array<f32, TQ * TK>;          // (TQ, TK) scores of the tile

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t0 = wid.x * TQ;
    let hq = wid.y;
    let kvh = hq / G;
    let n_tok = params.n_tok;
    let pos = params.pos;
    if (t0 >= n_tok) { return; }  // workgroup-uniform
    let r = lid / TPR;
    let j = lid % TPR;
    let row_ok = t0 + r < n_tok;
    let last = pos + min(n_tok, t0 + TQ) - 1u;   // last position any row of this tile sees
{{RANGE}}
    for (var i = lid; i < TQ * HD; i += WG) {
        let tr = t0 + i / HD;
        let v = select(0.0, q[tr * N_HEADS * HD + hq * HD + i % HD] * SCALE, tr < n_tok);
        qs[i / 4u][i % 4u] = ST(v);
    }
    var m = NEG;
    var l = 0.0;
    var acc = array<vec4<f32>, DPT4>();
    let my_last = pos + t0 + r;                   // causal limit of this row

    for (var k0 = k_begin; k0 <= klast; k0 += TK) {
        // K and V words of the tile: rows past `klast` are zero, never read from the cache
{{TILE_LOADS}}
        workgroupBarrier();                       // kt / pw of the previous tile are consumed
{{STORE_K}}
        workgroupBarrier();
        // the KPT scores of this invocation side by side (named scalars, unrolled): each query vec4
        // is read from workgroup memory once for all of them; every score sums over d4 in order
{{SCORES}}
        workgroupBarrier();
{{STORE_V}}
        var mx = m;
        for (var kk = 0u; kk < TK; kk++) { mx = max(mx, pw[r * TK + kk]); }
        let alpha = exp(m - mx);
        m = mx;
        workgroupBarrier();                       // V staged; every invocation has its row's max
        // p = exp(score - max) once per (row, key), by the invocation that scored the key (the TPR
        // invocations of a row used to compute all TK exponentials each)
{{P_STORE}}
        workgroupBarrier();
        l *= alpha;
        for (var i = 0u; i < DPT4; i++) { acc[i] *= alpha; }
        for (var kk = 0u; kk < TK; kk++) {
            let p = pw[r * TK + kk];
            l += p;
            for (var i = 0u; i < DPT4; i++) { acc[i] += p * vec4<f32>(kt[kk * KROW4 + j + TPR * i]); }
        }
    }
{{STORE}}
}
