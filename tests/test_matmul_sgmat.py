"""The prefill tiles on Chromium's subgroup matrices (shaders/matmul_sgmat.py): when they are chosen,
what they render, and the fallback to the FMA tiles. Their numerics are checked where they can run,
in Chromium on a GPU with the feature (pybuild/device_page_check.sh: the matmul / gate_up check cases
in the page, docs/PERFORMANCE.md); wgpu-py, lavapipe and SwiftShader lack it, so here the selection
and the generated WGSL are pinned."""

import re
from dataclasses import replace

import pytest

import shaders
from shaders import matmul_sgmat, registry
from shaders.core import Caps, UnsupportedKernel

shaders.load_ops()

# what Chromium 156 reported on an H200 (2026-12-03): f16 and int8 configs, 32-wide subgroups
H200 = (("f16", "f16", 16, 8, 8), ("f16", "f16", 16, 8, 16), ("f16", "f16", 16, 16, 16),
        ("f16", "f32", 16, 8, 8), ("f16", "f32", 16, 8, 16), ("f16", "f32", 16, 16, 16),
        ("i8", "i32", 16, 8, 32), ("i8", "i32", 16, 16, 32))
CAPS = Caps(shader_f16=True, subgroups=True, max_workgroup_storage=49152, subgroup_matrix=H200,
            subgroup_sizes=(32, 32))


def test_config_choice():
    assert matmul_sgmat.sgmat_config(CAPS) == (16, 16, 16)
    no16 = tuple(c for c in H200 if c[2:] != (16, 16, 16))
    assert matmul_sgmat.sgmat_config(replace(CAPS, subgroup_matrix=no16)) == (16, 8, 16)
    for caps in (replace(CAPS, shader_f16=False), replace(CAPS, subgroups=False),
                 replace(CAPS, subgroup_matrix=()), replace(CAPS, subgroup_sizes=(0, 0)),
                 replace(CAPS, subgroup_sizes=(32, 64)),   # AMD-like: 32 or 64 wide
                 replace(CAPS, subgroup_matrix=tuple(c for c in H200 if c[0] != "f16"))):
        assert matmul_sgmat.sgmat_config(caps) is None, caps


def test_caps_from_adapter_reads_configs_only_with_the_feature():
    cfgs = [{"componentType": "f16", "resultComponentType": "f32", "M": 16, "N": 16, "K": 16},
            {"componentType": "i8", "resultComponentType": "i32", "M": 16, "N": 8, "K": 32}]
    feats = ["shader-f16", "subgroups", "chromium-experimental-subgroup-matrix"]
    c = Caps.from_adapter(feats, {}, None, cfgs, (32, 32))
    assert c.subgroup_matrix == (("f16", "f32", 16, 16, 16), ("i8", "i32", 16, 8, 32))
    assert c.subgroup_sizes == (32, 32)
    assert Caps.from_adapter(feats[:2], {}, None, cfgs, (32, 32)).subgroup_matrix == ()


def test_matmul_renders_the_matrix_tiles():
    k = shaders.kernel("matmul", CAPS, fmt="q4_0", rows=576, cols=1536, accumulate=1)
    assert k.meta["sgmat"] == (16, 16, 16) and k.meta["tile"] == (64, 128, 64)
    assert "chromium-experimental-subgroup-matrix" in k.features
    assert "sgm16" in k.slug and k.grid(n_tok=130) == (5, 3, 1)
    src = k.wgsl
    assert "enable chromium_experimental_subgroup_matrix;" in src
    # Chromium 156: majorness as a template argument (the boolean-argument form is deprecated) and
    # subgroup-uniform offsets from @builtin(subgroup_id)
    loads = re.findall(r"subgroupMatrixLoad<(subgroup_matrix_\w+)<f16, (\d+), (\d+)>, (\w+)>", src)
    assert {(t, m) for t, _, _, m in loads} == {("subgroup_matrix_left", "row_major"),
                                                 ("subgroup_matrix_right", "col_major")}
    assert "@builtin(subgroup_id) sg: u32" in src
    assert "subgroupMatrixStore<row_major>(&w_res, sg * MM * MN" in src
    # 2 x 2 result blocks of 16 x 16 per subgroup, each multiplied once per 16-deep K step
    assert src.count("subgroupMatrixMultiplyAccumulate(") == 4
    assert "y[o] = y[o] + v_w_;" in src          # the accumulate store, per element, masked
    assert "if (t < n_tok && r < ROWS)" in src
    # the register prefetch: (64 tokens + 128 rows) x 16 vec4 columns over 256 invocations
    assert len(re.findall(r"var px\d+ = ", src)) == 4 and len(re.findall(r"var pw_w_\d+ = ", src)) == 8
    assert "if (k0 + TK < COLS)" in src


def test_gate_up_renders_both_weights_with_the_fused_store():
    k = shaders.kernel("gate_up", CAPS, fmt="q8_0", ffn=1536, hidden=576, decode=0)
    assert k.meta["tile"][1] == 64 and "sgm16" in k.slug
    assert "act[o] = g / (1.0 + exp(-g)) * v_w3_;" in k.wgsl
    assert k.wgsl.count("subgroupMatrixMultiplyAccumulate(") == 4   # 2 token blocks x 2 weights


def test_fma_tiles_where_the_matrix_tile_does_not_fit_or_is_not_offered():
    small = replace(CAPS, max_workgroup_storage=16384)    # the WebGPU default limit
    for caps in (small, replace(CAPS, subgroup_matrix=())):
        k = shaders.kernel("matmul", caps, fmt="q4_0", rows=576, cols=1536)
        assert "sgm" not in k.slug and "subgroup_matrix" not in k.wgsl
    # decode kernels never use them
    k = shaders.kernel("matvec", CAPS, fmt="q4_0", rows=576, cols=1536)
    assert "subgroup_matrix" not in k.wgsl


def test_check_variants_include_the_fma_tiles_next_to_the_matrix_tiles():
    slugs = {shaders.kernel("matmul", c, fmt="f16", rows=67, cols=576).slug
             for c in registry.variant_caps(CAPS)}
    assert any("sgm16" in s for s in slugs) and any("sgm" not in s and "_h_" in s for s in slugs)


def test_too_narrow_a_tile_is_refused_not_miscomputed():
    wide = replace(CAPS, subgroup_matrix=(("f16", "f32", 16, 64, 16),))   # N = 64: not offered as 8/16
    assert matmul_sgmat.sgmat_config(wide) is None
    with pytest.raises(UnsupportedKernel):
        spec = shaders.matmul.WeightSpec("matmul", "f16", 8, 32, 32, ("w_",), "y",
                                         "        y[o] = acc_w_{i}.{c};", "", shaders.matmul.MATMUL_PARAMS)
        matmul_sgmat.sgmat_kernel(CAPS, spec, (64, 64, 16), "", lambda p, tk: "vec4<f32>(0.0)")
