// shared-memory tree reduction (no subgroups needed); WG is a power of two.
var<workgroup> red: array<f32, NACC * WG>;   // (NACC, WG)

fn reduce(lid: u32, acc: array<f32, NACC>) {
    for (var i = 0u; i < NACC; i++) {
        red[i * WG + lid] = acc[i];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var i = 0u; i < NACC; i++) {
                red[i * WG + lid] += red[i * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
}

// total of partial sum i over the workgroup (call after reduce)
fn total(i: u32) -> f32 { return red[i * WG]; }

// the same tree over partial sums already stored at red[i * WG + lid] (the unrolled matvec path)
fn tree_reduce(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var i = 0u; i < NACC; i++) {
                red[i * WG + lid] += red[i * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
}
