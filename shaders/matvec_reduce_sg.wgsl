// subgroup reduction: subgroupAdd per partial sum, then one shared slot per subgroup.
// Subgroups are taken as consecutive local_invocation_index ranges and at least 4 wide
// (true on NVIDIA, AMD, Intel, lavapipe, SwiftShader), hence WG / 4 slots.
var<workgroup> red: array<f32, NACC * (WG / 4u)>;   // (subgroups, NACC)
var<workgroup> nsg: u32;

fn reduce(lid: u32, sg_lane: u32, sg_size: u32, acc: array<f32, NACC>) {
    for (var i = 0u; i < NACC; i++) {
        let s = subgroupAdd(acc[i]);
        if (sg_lane == 0u) {
            red[(lid / sg_size) * NACC + i] = s;
        }
    }
    if (lid == 0u) {
        nsg = (WG + sg_size - 1u) / sg_size;
    }
    workgroupBarrier();
}

// total of partial sum i over the workgroup (call after reduce)
fn total(i: u32) -> f32 {
    var t = 0.0;
    for (var j = 0u; j < nsg; j++) {
        t += red[j * NACC + i];
    }
    return t;
}
