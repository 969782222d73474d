const COLS: u32 = {{COLS}}u;   // columns = length of x
const GS: u32 = {{GS}}u;       // quantization group size (columns)
const GPR: u32 = {{GPR}}u;     // groups per row = COLS / GS
const WPR: u32 = {{WPR}}u;     // u32 words per row
const VEC: u32 = {{VEC}}u;     // words per weight load (4: vec4<u32>, 1: u32)
const NCH: u32 = {{NCH}}u;     // chunks per row = WPR / VEC
const CE: u32 = {{CE}}u;       // columns per chunk
const WG: u32 = {{WG}}u;       // threads per workgroup
const R: u32 = {{R}}u;         // rows per workgroup
const NACC: u32 = {{NACC}}u;   // partial sums per thread (+ 1 with a fused norm: its sum x^2)
