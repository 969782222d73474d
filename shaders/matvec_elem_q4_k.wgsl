// q4_k weights "{{W}}": qs (rows, cols/8) u32, nibble j of word w = column 8w+j (low 4 bits of q);
// sb (rows, cols/256) vec4<u32>, one record per 256-column super-block: x = f16 d | f16 dmin << 16,
// y / z nibble j = low 4 bits of sub-block j's 6-bit scale sc_j / min m_j, w bits 2j / 16+2j =
// their high 2 bits. value = (d * sc_j) * q - dmin * m_j, sub-block j = 32 columns.
fn {{W}}rec(row: u32, sbi: u32) -> vec4<u32> { return {{W}}sb[row * (WPR / 32u) + sbi]; }

// (d * sc_j, dmin * m_j) of sub-block j of record r (both products exact in f32)
fn {{W}}kdm(r: vec4<u32>, j: u32) -> vec2<f32> {
    let t = r.w >> (2u * j);
    let sm = vec2<u32>(((r.y >> (4u * j)) & 15u) | ((t << 4u) & 48u),
                       ((r.z >> (4u * j)) & 15u) | ((t >> 12u) & 48u));
    // 6-bit integers to f32 through the mantissa of 2^23 (no int-to-float conversion)
    return unpack2x16float(r.x) *
           (bitcast<vec2<f32>>(sm | vec2<u32>(0x4B000000u)) - vec2<f32>(8388608.0));
}

// nibbles 0..3 / 4..7 of a word as f32 q (unsigned), as q4_1's
fn {{W}}nib_lo(w: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) |
                              vec4<u32>(0x4B000000u)) - vec4<f32>(8388608.0);
}
fn {{W}}nib_hi(w: u32) -> vec4<f32> { return {{W}}nib_lo(w >> 16u); }

// 4 weights of row `row` at columns 4*c4 .. 4*c4+3 (one half of a qs word, one sub-block)
fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    let w = {{W}}word(row * WPR + (c4 >> 1u)) >> (16u * (c4 & 1u));
    let dm = {{W}}kdm({{W}}rec(row, c4 >> 6u), (c4 >> 3u) & 7u);
    return {{W}}nib_lo(w) * dm.x - dm.y;
}

fn {{W}}elem1(row: u32, c: u32) -> f32 {
    let q = ({{W}}word(row * WPR + (c >> 3u)) >> (4u * (c & 7u))) & 15u;
    let dm = {{W}}kdm({{W}}rec(row, c >> 8u), (c >> 5u) & 7u);
    return f32(q) * dm.x - dm.y;
}
