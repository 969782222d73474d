// f16 weights "{{W}}": data (rows, cols/2) u32 = 2 x f16, low half = even column.
fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    let i = row * WPR + 2u * c4;   // needs COLS % 4 == 0 (word pairs never straddle rows)
    return vec4<f32>(unpack2x16float({{W}}word(i)), unpack2x16float({{W}}word(i + 1u)));
}

fn {{W}}elem1(row: u32, c: u32) -> f32 {
    return unpack2x16float({{W}}word(row * WPR + (c >> 1u)))[c & 1u];
}
