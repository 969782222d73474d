"""The shader harness itself: adapter identity, variant coverage, compile-error reporting, the
dump switch, the CLI's bad-input handling, and the registry's contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import shaders
from shaders import Caps, UnsupportedKernel, harness, registry

ROOT = Path(__file__).resolve().parent.parent
shaders.load_ops()   # registers every op and its cases (what shaders.kernel does on first use)


def _py(*args, env=None, timeout=300):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.gpu
def test_expected_adapter():
    """CI sets WGPU_EXPECT_ADAPTER=llvmpipe: the device must be that adapter."""
    expect = os.environ.get("WGPU_EXPECT_ADAPTER")
    if not expect:
        pytest.skip("WGPU_EXPECT_ADAPTER is not set (CI sets it to llvmpipe)")
    dev = harness.get_device()
    assert expect.lower() in harness.adapter_name(dev).lower()


def test_wrong_adapter_fails_not_skips():
    r = _py("-c", "from shaders import harness; harness.get_device()",
            env={"WGPU_EXPECT_ADAPTER": "no-such-gpu-xyz"})
    assert r.returncode != 0
    assert "AssertionError" in r.stderr and "no-such-gpu-xyz" in r.stderr


def test_cli_wrong_adapter_is_one_line_exit_2():
    r = _py("-m", "shaders", "check", "--quick", "--op", "embed",
            env={"WGPU_EXPECT_ADAPTER": "no-such-gpu-xyz"})
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr


@pytest.mark.gpu
def test_cli_unknown_op_exit_2():
    harness.get_device()  # skips without an adapter
    r = _py("-m", "shaders", "check", "--op", "no_such_op")
    assert r.returncode == 2 and "no_such_op" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.gpu
def test_variants_cover_fallback_and_features():
    """On an adapter with shader-f16 and subgroups (lavapipe), the fallback AND the feature
    variants are both run."""
    dev = harness.get_device()
    caps = harness.caps_of(dev)
    case = next(c for c in registry.cases(True, ["matvec"]) if c.dims["rows"] > 1)
    variants = {r["variant"] for r in harness.run_case(case, caps, dev)}
    assert "fallback" in variants
    if caps.subgroups:
        assert "subgroups" in variants
    mm = next(iter(registry.cases(True, ["matmul"])))
    mm_variants = {r["variant"] for r in harness.run_case(mm, caps, dev)}
    assert "fallback" in mm_variants
    if caps.shader_f16:
        assert "f16" in mm_variants


def test_variant_caps():
    full = Caps(shader_f16=True, subgroups=True)
    vs = registry.variant_caps(full)
    assert len(vs) == 5 and Caps(shader_f16=False, subgroups=False) in vs
    assert Caps(shader_f16=True, subgroups=True, packed_dot=False) in vs
    assert registry.variant_caps(Caps(packed_dot=False)) == [Caps(packed_dot=False)]


def test_packed_dot_language_feature_gates_int8_decode():
    """The q4_0 decode kernels use dot4I8Packed only where the WGSL compiler lists
    packed_4x8_integer_dot_product (browsers: navigator.gpu.wgslLanguageFeatures)."""
    assert Caps.from_adapter([], {}).packed_dot            # native (naga): known to have it
    assert Caps.from_adapter([], {}, ["packed_4x8_integer_dot_product"]).packed_dot
    no = Caps.from_adapter([], {}, ["readonly_and_readwrite_storage_textures"])
    assert not no.packed_dot
    for op, dims in [("matvec", dict(rows=8, cols=64)),
                     ("gate_up", dict(ffn=8, hidden=64, decode=1)),
                     ("qkv_rope_decode", dict(hidden=64, n_heads=2, n_kv_heads=1, head_dim=16, heads="q"))]:
        k = shaders.kernel(op, Caps(), fmt="q4_0", **dims)
        assert "dot4I8Packed" in k.wgsl, op
        k = shaders.kernel(op, no, fmt="q4_0", **dims)
        assert "dot4I8Packed" not in k.wgsl and not k.meta.get("language_features"), op


def test_fallback_needs_no_feature():
    k = shaders.kernel("matvec", Caps(), fmt="q4_0", rows=8, cols=64)
    assert "enable" not in k.wgsl and k.features == ()
    k = shaders.kernel("matvec", Caps(subgroups=True), fmt="q4_0", rows=8, cols=64)
    assert "enable subgroups;" in k.wgsl and "subgroups" in k.features
    k = shaders.kernel("matmul", Caps(shader_f16=True), fmt="f16", rows=8, cols=64)
    assert "enable f16;" in k.wgsl and "shader-f16" in k.features


def test_decode_row_blocks_rule():
    """matvec.auto_rb (H200 figures in its comment): RB = 2 on 14336 rows (gate_up, 8B), RB = 4 on
    an LM head, none on 4096 or 2048 rows, on f16 / f32, or where a thread has two x chunks; the
    grid shrinks by RB and the kernel runs its blocks in a loop; bad explicit rb is named."""
    c = Caps(subgroups=True)
    rb = {}
    for fmt, rows, cols in [("q4_0", 14336, 4096), ("q6_k", 14336, 4096), ("q4_0", 4096, 4096),
                            ("q4_0", 2048, 8192), ("q4_0", 128256, 2048), ("f16", 128256, 2048),
                            ("q4_0", 4096, 14336)]:
        k = shaders.kernel("matvec", c, fmt=fmt, rows=rows, cols=cols)
        rb[fmt, rows, cols] = int(k.slug.partition("_rb")[2] or 1)
        from shaders.wgsl_common import fold_grid
        assert tuple(k.grid()[:2]) == fold_grid(-(-rows // (k.meta["rows_per_wg"] *
                                                            rb[fmt, rows, cols]))), k.slug
        assert ("blk < " in k.wgsl) == (rb[fmt, rows, cols] > 1)
    assert rb == {("q4_0", 14336, 4096): 2, ("q6_k", 14336, 4096): 2, ("q4_0", 4096, 4096): 1,
                  ("q4_0", 2048, 8192): 1, ("q4_0", 128256, 2048): 4, ("f16", 128256, 2048): 1,
                  ("q4_0", 4096, 14336): 1}
    g = shaders.kernel("gate_up", c, fmt="q4_0", ffn=14336, hidden=4096, decode=1, norm_eps=1e-5)
    assert g.slug.endswith("_rb2")
    assert "_rb" not in shaders.kernel("matvec", c, fmt="q4_0", rows=14336, cols=4096, rb=1).slug
    with pytest.raises(UnsupportedKernel, match="rb=2 needs one chunk per thread"):
        shaders.kernel("matvec", c, fmt="q4_0", rows=64, cols=14336, rb=2)


def test_unsupported_combinations_are_named():
    with pytest.raises(UnsupportedKernel, match="matvec.*not a multiple of the group size"):
        shaders.kernel("matvec", Caps(), fmt="q4_0", rows=4, cols=48)
    with pytest.raises(UnsupportedKernel, match="unknown weight format"):
        shaders.kernel("matmul", Caps(), fmt="q3_k", rows=4, cols=64)
    with pytest.raises(UnsupportedKernel, match="unknown op"):
        shaders.kernel("nope", Caps())


def test_kernel_is_cached_and_bindings_follow_contract():
    a = shaders.kernel("matvec", Caps(), fmt="q4_1", rows=16, cols=64, accumulate=1)
    assert a is shaders.kernel("matvec", Caps(), fmt="q4_1", rows=16, cols=64, accumulate=1)
    assert [b.name for b in a.bindings] == ["x", "w_qs", "w_scales", "w_mins", "y", "params"]
    g = shaders.kernel("gate_up", Caps(), fmt="q8_0", ffn=64, hidden=32)
    assert [b.name for b in g.bindings] == ["x", "w1_qs", "w1_scales", "w3_qs", "w3_scales",
                                            "act", "params"]
    e = shaders.kernel("embed", Caps(), fmt="f16", hidden=32)
    assert [b.name for b in e.bindings] == ["ids", "w_data", "x", "params"]
    assert e.params.pack(n_tok=1, row_start=0, rows=3)[:12] == bytes([1, 0, 0, 0, 0, 0, 0, 0,
                                                                       3, 0, 0, 0])


@pytest.mark.gpu
def test_compile_error_names_slug_and_line():
    good = shaders.kernel("matvec", Caps(), fmt="f32", rows=4, cols=8)
    lines = good.wgsl.splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith("const COLS"))
    lines[n] = "const COLS: u32 = 8.5;  // broken on purpose"
    from dataclasses import replace

    bad = replace(good, key=replace(good.key, op="broken_matvec"), wgsl="\n".join(lines))
    with pytest.raises(harness.ShaderCompileError) as ei:
        harness.pipeline(bad)
    msg = str(ei.value)
    assert bad.slug in msg and f"line {n + 1}" in msg and "8.5" in msg


@pytest.mark.gpu
def test_dump_writes_every_rendered_source(tmp_path):
    harness.get_device()
    r = _py("-m", "shaders", "check", "--quick", "--op", "embed", "--dump", str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.glob("*.wgsl"))
    assert "embed_q4_0_wg64_t1_v4_h96_g32.wgsl" in files and len(files) >= 10
    assert "{{" not in (tmp_path / files[0]).read_text()


def test_native_source_keeps_line_numbers():
    src = "enable f16;\nenable subgroups;\nfn f() {}\n"
    out = harness.native_source(src)
    assert out.count("\n") == src.count("\n") and "\nenable subgroups;" not in out


def test_package_renders_without_numpy_or_wgpu():
    """shaders/ runs in Pyodide: importing it and rendering kernels needs no third-party module."""
    code = ("import sys; sys.modules['numpy'] = None; sys.modules['wgpu'] = None\n"
            "import shaders\n"
            "from shaders import Caps\n"
            "c = Caps(shader_f16=True, subgroups=True)\n"
            "for f in ('q4_0', 'q4_1', 'q8_0', 'f16', 'f32'):\n"
            "    shaders.kernel('matvec', c, fmt=f, rows=64, cols=128)\n"
            "    shaders.kernel('matmul', c, fmt=f, rows=64, cols=128)\n"
            "    shaders.kernel('gate_up', c, fmt=f, ffn=64, hidden=128, decode=1)\n"
            "    shaders.kernel('embed', c, fmt=f, hidden=128)\n"
            "print(len(shaders.all_ops()))\n")
    r = _py("-c", code)
    assert r.returncode == 0, r.stderr[-2000:]


def test_row_blocks_fit_one_binding():
    from modelfmt.formats import MAX_PART_BYTES, part_nbytes
    from shaders.bench import row_blocks

    blocks = row_blocks("f16", 128256, 2048)
    assert len(blocks) == 4 and sum(n for _, n in blocks) == 128256
    assert all(part_nbytes("f16", "data", n, 2048) <= MAX_PART_BYTES for _, n in blocks)
    assert row_blocks("q4_0", 128256, 2048) == [(0, 128256)]
