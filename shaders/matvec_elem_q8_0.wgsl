// q8_0 weights "{{W}}": qs (rows, cols/4) u32, byte j of word w = column 4w+j (i8);
// scales (rows * cols/GS) f16, 2 per u32, low half first. value = q * d.
fn {{W}}scale(g: u32) -> f32 { return unpack2x16float({{W}}scales[g >> 1u])[g & 1u]; }

// the 4 signed bytes of a word as f32 (shift each byte to the top, arithmetic shift back)
fn {{W}}i8x4(w: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    return {{W}}i8x4({{W}}word(row * WPR + c4)) * {{W}}scale(row * GPR + (4u * c4) / GS);
}

fn {{W}}elem1(row: u32, c: u32) -> f32 {
    let b = bitcast<i32>({{W}}word(row * WPR + (c >> 2u)) << (24u - 8u * (c & 3u))) >> 24u;
    return f32(b) * {{W}}scale(row * GPR + c / GS);
}
