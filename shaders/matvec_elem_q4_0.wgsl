// q4_0 weights "{{W}}": qs (rows, cols/8) u32, nibble j of word w = column 8w+j;
// scales (rows * cols/GS) f16, 2 per u32, low half first. value = (q - 8) * d.
fn {{W}}scale(g: u32) -> f32 { return unpack2x16float({{W}}scales[g >> 1u])[g & 1u]; }

// nibbles 0..3 / 4..7 of a word as f32 (q - 8): OR-ing a 4-bit value into the mantissa of 2^23
// and subtracting gives it exactly, with no int-to-float conversion (quarter rate on NVIDIA)
fn {{W}}nib_lo(w: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) |
                              vec4<u32>(0x4B000000u)) - vec4<f32>(8388616.0);
}
fn {{W}}nib_hi(w: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(((vec4<u32>(w) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) |
                              vec4<u32>(0x4B000000u)) - vec4<f32>(8388616.0);
}

// the same without shifts ("mask" unpacking, matvec unpack=1): lane j keeps nibble j in place,
// worth q * 16^j (exact below 2^24); the caller pre-scales x lane j by 16^-j
fn {{W}}nibm_lo(w: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>((vec4<u32>(w) & vec4<u32>(0xFu, 0xF0u, 0xF00u, 0xF000u)) |
                              vec4<u32>(0x4B000000u)) - vec4<f32>(8388616.0, 8388736.0, 8390656.0, 8421376.0);
}
fn {{W}}nibm_hi(w: u32) -> vec4<f32> { return {{W}}nibm_lo(w >> 16u); }

// 4 weights of row `row` at columns 4*c4 .. 4*c4+3 (one half of a qs word, one group)
fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    let w = {{W}}word(row * WPR + (c4 >> 1u)) >> (16u * (c4 & 1u));
    return {{W}}nib_lo(w) * {{W}}scale(row * GPR + (4u * c4) / GS);
}

fn {{W}}elem1(row: u32, c: u32) -> f32 {
    let q = ({{W}}word(row * WPR + (c >> 3u)) >> (4u * (c & 7u))) & 15u;
    return (f32(q) - 8.0) * {{W}}scale(row * GPR + c / GS);
}
