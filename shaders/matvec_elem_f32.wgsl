// f32 weights "{{W}}": data (rows, cols) f32, read as u32 words and bitcast.
fn {{W}}elem4(row: u32, c4: u32) -> vec4<f32> {
    let i = row * WPR + 4u * c4;   // needs COLS % 4 == 0
    return bitcast<vec4<f32>>(vec4<u32>({{W}}word(i), {{W}}word(i + 1u), {{W}}word(i + 2u),
                                        {{W}}word(i + 3u)));
}

fn {{W}}elem1(row: u32, c: u32) -> f32 { return bitcast<f32>({{W}}word(row * WPR + c)); }
