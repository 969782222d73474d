// decode dot, f16: row `row`, chunk `ch` = VEC words = CE = 2*VEC columns.
fn {{W}}dot(row: u32, ch: u32) -> f32 {
    let wv = {{W}}chunk(row * NCH + ch);
    let c0 = ch * CE;
    if (VEC == 4u) {   // 8 columns: two x vec4 loads (COLS % 8 == 0 here)
        let a = vec4<f32>(unpack2x16float(wv.x), unpack2x16float(wv.y));
        let b = vec4<f32>(unpack2x16float(wv.z), unpack2x16float(wv.w));
        return dot(a, x4(c0 / 4u)) + dot(b, x4(c0 / 4u + 1u));
    }
    let h = unpack2x16float(wv.x);
    return h.x * x1(c0) + h.y * x1(c0 + 1u);
}
