// decode dot, q8_0: row `row`, chunk `ch` = VEC qs words = CE columns, all in one group.
fn {{W}}dot(row: u32, ch: u32) -> f32 {
    let wv = {{W}}chunk(row * NCH + ch);   // VEC words (unused lanes 0)
    let c4 = ch * (CE / 4u);
    var dq = 0.0;
    for (var k = 0u; k < VEC; k++) {
        dq += dot({{W}}i8x4(wv[k]), x4(c4 + k));
    }
    return {{W}}scale(row * GPR + (ch * CE) / GS) * dq;
}
