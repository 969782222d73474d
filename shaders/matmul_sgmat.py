"""Prefill matmul tiles on the GPU's matrix units (Chromium's ``chromium-experimental-subgroup-matrix``).

``matmul.tiled_kernel`` renders this variant instead of its FMA tiles when ``sgmat_config(caps)``
finds an f16 x f16 -> f32 subgroup-matrix config on a device whose subgroups are exactly 32 wide;
the bindings, grid semantics and per-element store (``WeightSpec.store``) are the same, so the
driver's prefill graph does not know which one runs. Inputs are rounded to f16 (as the FMA
kernel's shader-f16 variant does), every product is accumulated in f32. Measured on an H200 in
Chromium (docs/PERFORMANCE.md); wgpu-py, lavapipe and SwiftShader lack the feature, so the check
cases of these kernels run in the page (the harness's browser check mode).

WGSL as Chromium 156 takes it (probed on the H200, 2026-12-03): the majorness is a template
argument (``subgroupMatrixLoad<T, row_major>(p, offset, stride)``; the boolean-argument form is
deprecated), and the pointer offsets must be subgroup-uniform, which ``@builtin(subgroup_id)`` is
and ``local_invocation_index / 32`` is not.
"""

from __future__ import annotations

from modelfmt.formats import QUANTIZED

from .core import Caps, Grid, Kernel, KernelKey, UnsupportedKernel, load_template, render
from .wgsl_common import WeightSpec, binding_decls, check_weight, tiled_bindings, weight_fns, words_per_row

SGMAT_SUBGROUP = 32    # invocations per subgroup the 8-subgroup tile layout assumes
TM = 64                # tokens per tile: 2 subgroup rows
# The tile, by measurement: the page's 1B-shape prefill of 512 tokens on the H200 (2026-12-03, best of 5,
# docs/PERFORMANCE.md), FMA tiles 11,315 tok/s; matrix tiles without the register prefetch 10,500-13,386
# (128 / 64 rows, K steps of 64 / 32); with it 19,350 (128 rows, K 32), 19,606 (64 rows, K 32) and
# 21,405 (128 rows, K 64: these constants).
TN_OF = {1: 128, 2: 64}   # weight rows per tile, by number of weights (matmul 1, gate_up 2 x 64)
PREFETCH = True        # the next K step's loads in registers during this step's multiplies
TK_CHOICES = (64, 32)  # columns per K step, the first that fits the workgroup memory


def sgmat_config(caps: Caps) -> tuple[int, int, int] | None:
    """(M, N, K) of the f16 -> f32 subgroup-matrix config to use, or None (FMA tiles): the largest
    of the adapter's configs with M, N in {8, 16} and K in {8, 16}, on shader-f16 devices whose
    subgroups are exactly ``SGMAT_SUBGROUP`` wide."""
    if not (caps.shader_f16 and caps.subgroups and caps.subgroup_matrix):
        return None
    if tuple(caps.subgroup_sizes) != (SGMAT_SUBGROUP, SGMAT_SUBGROUP):
        return None
    ok = [(m * n * k, m, n, k) for c, r, m, n, k in caps.subgroup_matrix
          if c == "f16" and r == "f32" and m in (8, 16) and n in (8, 16) and k in (8, 16)]
    if not ok:
        return None
    _, m, n, k = max(ok)
    return m, n, k


def sgmat_kernel(caps: Caps, spec: WeightSpec, cfg: tuple[int, int, int], xload: str,
                 wload) -> Kernel:
    """The matrix-unit tile for ``spec`` (``matmul.tiled_kernel``'s spec); ``xload`` is the WGSL of
    ``xload4`` and ``wload(prefix, tk)`` the expression of ``wload4_<prefix>``, both shared with the
    FMA tiles."""
    op, fmt, rows, cols, group_size = spec.op, spec.fmt, spec.rows, spec.cols, spec.group_size
    weights = spec.weights
    check_weight(op, fmt, rows, cols, group_size)
    if fmt in QUANTIZED and group_size % 4:
        raise UnsupportedKernel(f"{op}: group size {group_size} is not a multiple of 4")
    if caps.max_workgroup_size < 256:
        raise UnsupportedKernel(f"{op}: needs 256 invocations per workgroup")
    mm, mn, mk = cfg
    nw = len(weights)
    tn = TN_OF[nw]
    fm, fn = TM // 2 // mm, tn // 4 // mn
    if fm < 1 or fn < 1:
        raise UnsupportedKernel(f"{op}: a {mm}x{mn} matrix does not fit the {TM}x{tn} tile")
    for tk in TK_CHOICES:   # deeper K steps: fewer barriers per multiply, where shared memory allows
        xs_ = tk + 8
        smem = 2 * (TM + nw * tn) * xs_ + 4 * nw * 8 * mm * mn
        if smem <= caps.max_workgroup_storage:
            break
    else:
        raise UnsupportedKernel(f"{op}: the matrix tile needs {smem} bytes of workgroup memory, "
                                f"the device allows {caps.max_workgroup_storage}")
    key = KernelKey(op=op, fmt=fmt, wg=256, tile=TM, vec=4, f16=True, subgroups=True,
                    dims=(("r", rows), ("c", cols), ("g", group_size), ("k", tk),
                          ("sgm", mm), ("sgn", mn), ("sgk", mk)) + spec.extra_dims)
    decls, bindings = binding_decls(tiled_bindings(spec))
    left = f"subgroup_matrix_left<f16, {mk}, {mm}>"
    right = f"subgroup_matrix_right<f16, {mn}, {mk}>"
    result = f"subgroup_matrix_result<f32, {mn}, {mm}>"
    tiles = "".join(f"var<workgroup> {p}tile: array<f16, TN * XS>;   // (TN, XS) dequantized weight tile, "
                    f"row-major, k contiguous\n" for p in weights)
    tiles += "".join(f"var<workgroup> {p}res: array<f32, 8u * MM * MN>;   // (8 subgroups, MM, MN) one result "
                     f"block each, on its way to the store\n" for p in weights)
    acc_decl = "".join(f"    var c_{p}{i}_{j} = {result}();   // tokens SMT sm + {i * mm} .., rows SNT sn + {j * mn} ..\n"
                       for p in weights for i in range(fm) for j in range(fn))
    inner = f"        for (var kk = 0u; kk < TK; kk += {mk}u) {{\n"
    inner += "".join(f"            let a{i} = subgroupMatrixLoad<{left}, row_major>(&xs, (SMT * sm + {i * mm}u) * XS + kk, XS);\n"
                     for i in range(fm))
    for p in weights:
        inner += "".join(f"            let b_{p}{j} = subgroupMatrixLoad<{right}, col_major>(&{p}tile, "
                         f"(SNT * sn + {j * mn}u) * XS + kk, XS);\n" for j in range(fn))
        inner += "".join(f"            c_{p}{i}_{j} = subgroupMatrixMultiplyAccumulate(a{i}, b_{p}{j}, c_{p}{i}_{j});\n"
                         for i in range(fm) for j in range(fn))
    inner += "        }"
    body = spec.store
    for p in weights:
        body = body.replace(f"acc_{p}{{i}}.{{c}}", f"v_{p}")
    if "{i}" in body or "{c}" in body:
        raise UnsupportedKernel(f"{op}: its store reads accumulators the matrix tile does not name")
    stores = []
    for i in range(fm):
        for j in range(fn):
            put = "".join(f"    subgroupMatrixStore<row_major>(&{p}res, sg * MM * MN, c_{p}{i}_{j}, MN);\n"
                          for p in weights)
            vals = "".join(f"            let v_{p} = {p}res[sg * MM * MN + e];\n" for p in weights)
            stores.append(
                f"{put}    workgroupBarrier();\n"
                f"    for (var e = lane; e < MM * MN; e += {SGMAT_SUBGROUP}u) {{\n"
                f"        let t = t0 + SMT * sm + {i * mm}u + e / MN;\n"
                f"        let r = n0 + SNT * sn + {j * mn}u + e % MN;\n"
                f"        if (t < n_tok && r < ROWS) {{\n"
                f"            let o = t * ROWS + r;\n{vals}"
                + "\n".join("    " + ln for ln in body.splitlines()) +
                "\n        }\n    }\n    workgroupBarrier();")
    kloop = _kloop(weights, tn, tk, inner)
    more = "".join(f"fn wload4_{p}(row: u32, c4: u32) -> vec4<f32> {{ return {wload(p, tk)}; }}\n"
                   for p in weights[1:])
    src = render(load_template("matmul_sgmat"), {
        "ENABLES": "enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;",
        "OP": op, "FMT": fmt, "SEMANTICS": spec.semantics, "PARAMS": spec.params.wgsl(),
        "BINDINGS": decls, "ROWS": rows, "COLS": cols,
        "GS": group_size if fmt in QUANTIZED else 1,
        "GPR": cols // group_size if fmt in QUANTIZED else 1, "WPR": words_per_row(fmt, cols),
        "TM": TM, "TN": tn, "TK": tk, "XS": tk + 8, "MN": mn, "MM": mm, "TILES": tiles,
        "WFNS": "".join(weight_fns(fmt, p, 1) for p in weights), "XLOAD": xload, "W0": weights[0],
        "WLOAD0": wload(weights[0], tk), "WLOAD_MORE": more, "ACC_DECL": acc_decl.rstrip("\n"),
        "KLOOP": kloop, "STORE": "\n".join(stores)}, slug=key.slug())
    return Kernel(key=key, wgsl=src, bindings=bindings, params=spec.params,
                  workgroup_size=(256, 1, 1),
                  features=("shader-f16", "subgroups", "chromium-experimental-subgroup-matrix"),
                  grid=Grid(lambda n_tok=1: (-(-rows // tn), -(-int(n_tok) // TM), 1), ("n_tok",)),
                  meta={"tile": (TM, tn, tk), "sgmat": cfg})


def _kloop(weights: tuple[str, ...], tn: int, tk: int, inner: str) -> str:
    """The K loop: stage x and the weights' TK columns in shared memory, then ``inner`` (the
    multiplies). With ``PREFETCH`` and an even split of the staging among 256 invocations, the
    values are loaded into registers (px*, pw*) one step ahead."""
    nk4 = tk // 4
    nx, nwl = TM * nk4 // 256, tn * nk4 // 256
    if not (PREFETCH and TM * nk4 % 256 == 0 and tn * nk4 % 256 == 0 and nx and nwl):
        stage_w = "".join(f"            let v_{p} = wload4_{p}(row, k0 / 4u + k4);\n" +
                          "".join(f"            {p}tile[o + {e}u] = f16(v_{p}.{c});\n"
                                  for e, c in enumerate("xyzw")) for p in weights)
        return ("    for (var k0 = 0u; k0 < COLS; k0 += TK) {\n"
                "        for (var i = lid; i < TM * NK4; i += 256u) {\n"
                "            let m = i / NK4;\n            let k4 = i % NK4;\n"
                "            var v = vec4<f32>(0.0);\n"
                "            if (t0 + m < n_tok) { v = xload4(t0 + m, k0 / 4u + k4); }\n"
                "            let o = m * XS + 4u * k4;\n" +
                "".join(f"            xs[o + {e}u] = f16(v.{c});\n" for e, c in enumerate("xyzw")) +
                "        }\n"
                "        for (var i = lid; i < TN * NK4; i += 256u) {\n"
                "            let n = i / NK4;\n            let k4 = i % NK4;\n"
                "            let row = min(n0 + n, ROWS - 1u);   // past-the-end rows: in-bounds garbage, "
                "not stored\n            let o = n * XS + 4u * k4;\n" + stage_w +
                "        }\n        workgroupBarrier();\n" + inner +
                "\n        workgroupBarrier();\n    }")
    # invocation lid's items: x item lid + 256 j (token i / NK4, vec4 column i % NK4), the same for weight rows
    decl = "".join(f"    var px{j} = vec4<f32>(0.0);   // x item lid + {256 * j} of the next K step\n"
                   for j in range(nx))
    decl += "".join(f"    var pw_{p}{j} = vec4<f32>(0.0);   // {p} item lid + {256 * j}\n"
                    for p in weights for j in range(nwl))

    def load(k: str, ind: str) -> str:
        out = ""
        for j in range(nx):
            out += (f"{ind}{{ let i = lid + {256 * j}u; let m = i / NK4;\n"
                    f"{ind}  px{j} = vec4<f32>(0.0);\n"
                    f"{ind}  if (t0 + m < n_tok) {{ px{j} = xload4(t0 + m, ({k}) / 4u + i % NK4); }} }}\n")
        for j in range(nwl):
            out += (f"{ind}{{ let i = lid + {256 * j}u; let row = min(n0 + i / NK4, ROWS - 1u);\n" +
                    "".join(f"{ind}  pw_{p}{j} = wload4_{p}(row, ({k}) / 4u + i % NK4);\n" for p in weights) +
                    f"{ind}}}\n")
        return out

    store = ""
    for j in range(nx):
        store += (f"        {{ let i = lid + {256 * j}u; let o = (i / NK4) * XS + 4u * (i % NK4);\n" +
                  "".join(f"          xs[o + {e}u] = f16(px{j}.{c});\n" for e, c in enumerate("xyzw")) +
                  "        }\n")
    for j in range(nwl):
        store += (f"        {{ let i = lid + {256 * j}u; let o = (i / NK4) * XS + 4u * (i % NK4);\n" +
                  "".join(f"          {p}tile[o + {e}u] = f16(pw_{p}{j}.{c});\n"
                          for p in weights for e, c in enumerate("xyzw")) +
                  "        }\n")
    return (decl + load("0u", "    ") +
            "    for (var k0 = 0u; k0 < COLS; k0 += TK) {\n" + store +
            "        workgroupBarrier();\n"
            "        if (k0 + TK < COLS) {   // the next step's loads, in flight during the multiplies\n" +
            load("k0 + TK", "            ") + "        }\n" + inner +
            "\n        workgroupBarrier();\n    }")
