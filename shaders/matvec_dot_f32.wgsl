// decode dot, f32: row `row`, chunk `ch` = VEC words = VEC columns.
fn {{W}}dot(row: u32, ch: u32) -> f32 {
    let wv = {{W}}chunk(row * NCH + ch);
    if (VEC == 4u) {
        return dot(bitcast<vec4<f32>>(wv), x4(ch));
    }
    return bitcast<f32>(wv.x) * x1(ch);
}
