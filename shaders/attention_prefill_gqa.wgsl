// Prefill attention, GQA-row register-tiled variant (op "attention_prefill", shaders/attention_prefill_gqa.py).
// Workgroup (x, kvh[, z]): query tokens t0 = x*TQ .. t0+TQ-1 of ALL G query heads of KV head kvh: R = TQ*G
// rows, row r = token t0 + r / G, query head kvh*G + r % G. Each K/V tile (TK positions) is staged once
// for the G heads that share it. Query t sees cache positions [0, pos + t] (causal).
// Per tile:
//   scores  invocation (iq = lid / NKG, ik = lid % NKG) computes the RQ x RK block of rows iq*RQ + a,
//           keys ik + NKG*c: per head-dim vec4 it reads RQ query + RK key vec4 and does RQ*RK dot
//           products (keys strided by NKG: neighbouring invocations read neighbouring padded K rows, no
//           bank conflicts). Each score is one sum over d4 in order, whatever the row's slot.
//   max     partial row maxima of each block -> `pm`; invocation r < R folds its row's max into `ms`
//           once per tile (a max is exact in any order) and the rescale exp(old - new) into `al`.
//   P       the scoring invocations write p = exp(s - max) of their block into `pw` (masked: 0 exactly).
//   P.V     invocation (ip = lid / NDG, id = lid % NDG) owns rows ip*RP + b and head-dim vec4s
//           id + NDG*e: per 4 keys it reads RP p vec4 + 4*DV V vec4 for 4*RP*DV vec4 FMAs; keys in
//           order, so a row's sums never depend on the other rows of its workgroup.
// A row's extra tiles (past its causal end, walked for the workgroup's last row) are exact no-ops:
// scores NEG, max unchanged, alpha = exp(0) = 1, p = 0. K and V rows past `klast` are zero, never read.
// Split variant (split=1): workgroup z walks positions [z * span, (z + 1) * span) and stores the partial
// (acc, m, l) into `part` for attention_prefill_combine; a row with no valid position in its split keeps
// m = NEG there, which the combine weighs exp(NEG - M) = 0 (see attention_prefill.wgsl).
const N_HEADS: u32 = {{N_HEADS}}u;
const N_KV: u32 = {{N_KV}}u;
const G: u32 = N_HEADS / N_KV;     // query heads per KV head
const HD: u32 = {{HEAD_DIM}}u;
const HD4: u32 = HD / 4u;
const WG: u32 = {{WG}}u;
const TQ: u32 = {{TQ}}u;           // query tokens per workgroup
const R: u32 = TQ * G;             // rows (token, head) per workgroup
const TK: u32 = {{TK}}u;           // keys per tile
const RQ: u32 = {{RQ}}u;           // score block: rows
const RK: u32 = {{RK}}u;           // score block: keys
const NKG: u32 = TK / RK;          // key groups (scoring invocations per row block)
const RP: u32 = {{RP}}u;           // P.V: rows per invocation
const DV: u32 = {{DV}}u;           // P.V: head-dim vec4s per invocation
const NDG: u32 = HD4 / DV;         // P.V: invocations per row block
const KROW4: u32 = HD4 + 1u;       // kt row stride in vec4, padded against bank conflicts
const PMROW: u32 = NKG + 1u;       // pm row stride, padded: invocation r reads row r
const PROW4: u32 = TK / 4u;        // pw row stride in vec4
const SCALE: f32 = {{SCALE}};
const NEG: f32 = -3.0e38;

{{PARAMS}}
@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;      // (n_tok, N_HEADS * HD) f32, as vec4
{{KV_DECL}}
{{OUT_DECL}}
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, R * HD4>;    // (R, HD) scaled queries
var<workgroup> kt: array<vec4<f32>, TK * KROW4>; // (TK, HD + 4) K tile, then V tile
var<workgroup> pw: array<vec4<f32>, R * PROW4>;  // (R, TK) probabilities of the tile
var<workgroup> pm: array<f32, R * PMROW>;        // (R, NKG + 1) partial row maxima of the tile
var<workgroup> ms: array<f32, R>;                // (R,) running row max
var<workgroup> al: array<f32, R>;                // (R,) exp(previous max - max) of the tile

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t0 = wid.x * TQ;
    let kvh = wid.y;
    let n_tok = params.n_tok;
    let pos = params.pos;
    if (t0 >= n_tok) { return; }  // workgroup-uniform
    let last = pos + min(n_tok, t0 + TQ) - 1u;   // last position any row of this workgroup sees
{{RANGE}}
    for (var i = lid; i < R * HD4; i += WG) {
        let rr = i / HD4;
        let t = t0 + rr / G;
        let qv = q[(min(t, n_tok - 1u) * N_HEADS + kvh * G + rr % G) * HD4 + i % HD4];
        qs[i] = select(vec4<f32>(0.0), qv * SCALE, t < n_tok);
    }
    for (var rr = lid; rr < R; rr += WG) { ms[rr] = NEG; }
    workgroupBarrier();                           // ms set even where no tile is walked (split)
    let iq = lid / NKG;
    let ik = lid % NKG;
    let ip = lid / NDG;
    let id = lid % NDG;
{{INIT}}

    for (var k0 = k_begin; k0 <= klast; k0 += TK) {
        // K and V words of the tile, all in flight at once: rows past `klast` are zero
{{TILE_LOADS}}
        workgroupBarrier();                       // kt / pw of the previous tile are consumed
{{STORE_K}}
        workgroupBarrier();
{{SCORES}}
        workgroupBarrier();                       // K consumed, partial maxima written
{{STORE_V}}
        for (var rr = lid; rr < R; rr += WG) {
            let mo = ms[rr];
            var mx = mo;
            for (var j = 0u; j < NKG; j++) { mx = max(mx, pm[rr * PMROW + j]); }
            ms[rr] = mx;
            al[rr] = exp(mo - mx);
        }
        workgroupBarrier();                       // V staged, row maxima known
{{P_STORE}}
        workgroupBarrier();
{{PV}}
    }
{{STORE}}
}
