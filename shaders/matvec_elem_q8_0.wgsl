// q8_0 weights "{{W}}": qs (rows, cols/4) u32, byte j of word w = column 4w+j (i8);
// scales (rows * cols/GS) f16, 2 per u32, low half first. value = q * d.
fn {{W}}scale(g: u32) -> f32 { return unpack2x16float({{W}}scales[g >> 1u])[g & 1u]; }

// the 4 signed bytes of a word as f32: byte ^ 0x80 = value + 128 goes into the mantissa of 2^23
// (exact, no int-to-float conversion, which is quarter rate on NVIDIA)
fn {{W}}i8x4(w: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)) ^
                              vec4<u32>(0x4B000080u)) - vec4<f32>(8388736.0);
}

fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    return {{W}}i8x4({{W}}word(row * WPR + c4)) * {{W}}scale(row * GPR + (4u * c4) / GS);
}

fn {{W}}elem1(row: u32, c: u32) -> f32 {
    let b = bitcast<i32>({{W}}word(row * WPR + (c >> 2u)) << (24u - 8u * (c & 3u))) >> 24u;
    return f32(b) * {{W}}scale(row * GPR + c / GS);
}
