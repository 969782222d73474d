// q6_k weights "{{W}}": qs (rows, cols/8) u32, nibble j of word w = low 4 bits of column 8w+j;
// sb (rows, cols/256 * 21) u32, 21 words per 256-column super-block at b = 21 * (row * NSB + s):
// b+0 .. b+3 = 16 int8 scales (byte i: columns 16i .. 16i+15), b+4 = f16 d (low half), and for
// 32-column chunk j the words b+5+2j, b+6+2j: byte i bits 4g+2p, 4g+2p+1 of word b+5+2j+h = the
// high 2 bits of chunk column 8(2h+g)+2i+p. value = (d * s_i) * (q - 32), q = nibble | high << 4.
fn {{W}}rb(row: u32, sbi: u32) -> u32 { return (row * (WPR / 32u) + sbi) * 21u; }

// (d * s_2j, d * s_2j+1): the two 16-column scales of chunk j of the record at b
fn {{W}}k6s(b: u32, j: u32) -> vec2<f32> {
    let w = {{W}}sb[b + (j >> 1u)] >> (16u * (j & 1u));
    let s = vec2<i32>(bitcast<i32>(w << 24u) >> 24u, bitcast<i32>(w << 16u) >> 24u);
    return unpack2x16float({{W}}sb[b + 4u]).x * vec2<f32>(s);
}

// 4 columns as f32 q - 32: nibbles 0..3 of w, their high 2 bits at bits 0, 2, 8, 10 of h
fn {{W}}q6(w: u32, h: u32) -> vec4<f32> {
    let q = ((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) |
            (((vec4<u32>(h) >> vec4<u32>(0u, 2u, 8u, 10u)) & vec4<u32>(3u)) << vec4<u32>(4u));
    return bitcast<vec4<f32>>(q | vec4<u32>(0x4B000000u)) - vec4<f32>(8388640.0);   // 2^23 + 32
}

// 4 weights of row `row` at columns 4*c4 .. 4*c4+3 (word k = (c4/2) % 4 of chunk j = (c4/8) % 8)
fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    let hs = 16u * (c4 & 1u);
    let k = (c4 >> 1u) & 3u;
    let b = {{W}}rb(row, c4 >> 6u);
    let w = {{W}}word(row * WPR + (c4 >> 1u)) >> hs;
    let h = {{W}}sb[b + 5u + 2u * ((c4 >> 3u) & 7u) + (k >> 1u)] >> (4u * (k & 1u) + hs);
    let i = (c4 >> 2u) & 15u;   // 16-column sub-block
    let s = f32(bitcast<i32>({{W}}sb[b + (i >> 2u)] << (24u - 8u * (i & 3u))) >> 24u);
    return {{W}}q6(w, h) * (unpack2x16float({{W}}sb[b + 4u]).x * s);
}

fn {{W}}elem1(row: u32, c: u32) -> f32 {
    let cc = c & 255u;
    let k = (cc >> 3u) & 3u;
    let r = cc & 7u;
    let b = {{W}}rb(row, c >> 8u);
    let hw = {{W}}sb[b + 5u + 2u * (cc >> 5u) + (k >> 1u)];
    let hi = (hw >> (8u * (r >> 1u) + 4u * (k & 1u) + 2u * (r & 1u))) & 3u;
    let q = (({{W}}word(row * WPR + (c >> 3u)) >> (4u * (c & 7u))) & 15u) | (hi << 4u);
    let i = cc >> 4u;
    let s = f32(bitcast<i32>({{W}}sb[b + (i >> 2u)] << (24u - 8u * (i & 3u))) >> 24u);
    return (unpack2x16float({{W}}sb[b + 4u]).x * s) * (f32(q) - 32.0);
}
