    // partial sums, one register each (generated unrolled: no dynamically indexed arrays,
    // which GPU compilers may spill to local memory)
{{ACC_DECL}}
    for (var ch = lid; ch < NCH; ch += WG) {
        // this chunk's x, loaded once and reused for all R rows
{{XLOAD}}
{{ACCUM}}
    }
{{REDUCE}}
