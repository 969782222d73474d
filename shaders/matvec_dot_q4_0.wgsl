// decode dot, q4_0: row `row`, chunk `ch` = VEC qs words = CE columns from c0, all in one group.
// sum (q - 8) d x = d * (sum q x - 8 sum x): one scale multiply per chunk.
fn {{W}}dot(row: u32, ch: u32) -> f32 {
    let wv = {{W}}chunk(row * NCH + ch);   // VEC words (unused lanes 0)
    let c4 = ch * (CE / 4u);
    var dq = 0.0;
    var sx = 0.0;
    for (var k = 0u; k < VEC; k++) {
        let w = vec4<u32>(wv[k]);
        let xa = x4(c4 + 2u * k);        // columns 8k .. 8k+3 of the chunk
        let xb = x4(c4 + 2u * k + 1u);   // columns 8k+4 .. 8k+7
        let qa = vec4<f32>((w >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
        let qb = vec4<f32>((w >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
        dq += dot(qa, xa) + dot(qb, xb);
        sx += dot(xa + xb, vec4<f32>(1.0));
    }
    return {{W}}scale(row * GPR + (ch * CE) / GS) * (dq - 8.0 * sx);
}
