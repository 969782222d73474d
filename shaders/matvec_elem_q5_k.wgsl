// q5_k weights "{{W}}": qs (rows, cols/8) u32, nibble j of word w = low 4 bits of column 8w+j;
// sb (rows, cols/256 * 3) vec4<u32>, three per 256-column super-block: the first as q4_k's record
// (d, dmin, 6-bit scales and mins), then one u32 per 32-column sub-block j (component j & 3 of
// vec4 1 + j/4) whose byte i bit 2k+p is the 5th bit of sub-block column 8k+2i+p.
// value = (d * sc_j) * q - dmin * m_j, q = nibble | bit << 4.
fn {{W}}rec(row: u32, sbi: u32) -> vec4<u32> { return {{W}}sb[3u * (row * (WPR / 32u) + sbi)]; }

// 5th bits of the 32 columns of chunk ch (global 32-column index along the row)
fn {{W}}qh(row: u32, ch: u32) -> u32 {
    return {{W}}sb[3u * (row * (WPR / 32u) + (ch >> 3u)) + 1u + ((ch & 7u) >> 2u)][ch & 3u];
}

// (d * sc_j, dmin * m_j) of sub-block j of record r, as q4_k's
fn {{W}}kdm(r: vec4<u32>, j: u32) -> vec2<f32> {
    let t = r.w >> (2u * j);
    let sm = vec2<u32>(((r.y >> (4u * j)) & 15u) | ((t << 4u) & 48u),
                       ((r.z >> (4u * j)) & 15u) | ((t >> 12u) & 48u));
    return unpack2x16float(r.x) *
           (bitcast<vec2<f32>>(sm | vec2<u32>(0x4B000000u)) - vec2<f32>(8388608.0));
}

// 4 columns as f32 q: nibbles 0..3 of w, their 5th bits at bits 0, 1, 8, 9 of h
fn {{W}}q5(w: u32, h: u32) -> vec4<f32> {
    let q = ((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) |
            (((vec4<u32>(h) >> vec4<u32>(0u, 1u, 8u, 9u)) & vec4<u32>(1u)) << vec4<u32>(4u));
    return bitcast<vec4<f32>>(q | vec4<u32>(0x4B000000u)) - vec4<f32>(8388608.0);
}

// 4 weights of row `row` at columns 4*c4 .. 4*c4+3 (word k = (c4/2) % 4 of chunk c4/8)
fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    let hs = 16u * (c4 & 1u);
    let w = {{W}}word(row * WPR + (c4 >> 1u)) >> hs;
    let h = {{W}}qh(row, c4 >> 3u) >> (2u * ((c4 >> 1u) & 3u) + hs);
    let dm = {{W}}kdm({{W}}rec(row, c4 >> 6u), (c4 >> 3u) & 7u);
    return {{W}}q5(w, h) * dm.x - dm.y;
}

fn {{W}}elem1(row: u32, c: u32) -> f32 {
    let cc = c & 31u;   // column within its 32-column chunk: 8k + 2i + p
    let hb = (({{W}}qh(row, c >> 5u) >> (8u * ((cc & 7u) >> 1u) + 2u * (cc >> 3u) + (cc & 1u))) & 1u);
    let q = (({{W}}word(row * WPR + (c >> 3u)) >> (4u * (c & 7u))) & 15u) | (hb << 4u);
    let dm = {{W}}kdm({{W}}rec(row, c >> 8u), (c >> 5u) & 7u);
    return f32(q) * dm.x - dm.y;
}
