"""Headless runner for the WGSL kernels through wgpu-py, and the numpy check of every registered case.

Native only: imports wgpu and numpy lazily (the package itself stays importable in Pyodide).

  get_device()                 cached wgpu-py device with shader-f16 / subgroups / timestamps when offered
  caps_of(device) -> Caps
  run(kernel, buffers, params, grid, outputs) -> {name: np.ndarray uint8}
  run_steps(steps, buffers, outputs)          several dispatches on the same named buffers
  weight_parts(rng, fmt, rows, cols, ...)     random weights as packed parts + their dequantized f32
  check(quick, ops) -> rows                   every case x every variant the adapter supports

The page runs the same cases and tolerances on its own device (kernels wgpu-py cannot reach, e.g. the
subgroup-matrix prefill tiles): ``python -m shaders export-cases DIR`` (shaders/case_export.py) writes
the single-dispatch cases, driver/kernel_check.py runs them on any driver.gpu.GPU with this module's
rows and ``variant_name``, compared by ``tolerances.verdict`` as ``compare`` here (docs/WEB.md,
"Kernel check in the page": ``/?check=1``).

Environment: ``WGPU_EXPECT_ADAPTER=llvmpipe`` makes a missing or different adapter an error (so GPU
tests fail instead of skipping); ``SHADERS_DUMP=DIR`` writes every rendered WGSL source.
"""

from __future__ import annotations

import os
import re
import sys
import time

from modelfmt import device

from . import registry, tolerances
from .core import Caps, Kernel, UnsupportedKernel

NO_ADAPTER = "no WebGPU adapter (install mesa-vulkan-drivers)"

# wgpu-native names the subgroup feature "subgroup"; browsers say "subgroups".
# modelfmt.device's features and raised limits in wgpu-py's spelling, plus timestamps inside
# passes for the kernel bench's timers
_WANTED_FEATURES = tuple(n for f in device.WANTED_FEATURES
                         for n in (f, *device.FEATURE_ALIASES.get(f, ()))) + (
    "timestamp-query-inside-passes",)
_RAISED_LIMITS = tuple(device.kebab(n) for n in device.RAISED_LIMITS)


class NoAdapter(RuntimeError):
    """wgpu-py found no adapter (or not the one ``WGPU_EXPECT_ADAPTER`` names)."""


class ShaderCompileError(RuntimeError):
    """WGSL that did not compile / validate; the message names the kernel slug and the line."""


# ---- device ----
_DEVICE = None


def _adapter_text(info) -> str:
    return " ".join(str(info.get(k, "")) for k in ("vendor", "device", "description", "architecture"))


def adapter_name(device=None) -> str:
    d = device or get_device()
    return _adapter_text(d.adapter.info).strip()


def get_device():
    """The cached wgpu-py device: high-performance adapter, optional features enabled, limits raised
    to the adapter's maxima. Under pytest with no adapter and no ``WGPU_EXPECT_ADAPTER`` it skips
    the test; with the variable set, a missing or different adapter raises AssertionError."""
    global _DEVICE
    if _DEVICE is not None:
        return _DEVICE
    expect = os.environ.get("WGPU_EXPECT_ADAPTER", "").strip()
    adapter = None
    err = ""
    try:
        import wgpu

        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception as e:  # wgpu-native raises when no Vulkan/Metal/DX12 driver is installed
        err = f" ({type(e).__name__}: {e})"
    if adapter is None:
        if expect:
            raise AssertionError(f"WGPU_EXPECT_ADAPTER={expect!r} but no adapter was found{err}")
        if "PYTEST_CURRENT_TEST" in os.environ:
            import pytest

            pytest.skip(NO_ADAPTER)
        raise NoAdapter(NO_ADAPTER + err)
    text = _adapter_text(adapter.info)
    if expect and expect.lower() not in text.lower():
        raise AssertionError(f"WGPU_EXPECT_ADAPTER={expect!r} but the adapter is {text.strip()!r}")
    feats = [f for f in _WANTED_FEATURES if f in adapter.features]
    limits = {k: adapter.limits[k] for k in _RAISED_LIMITS if k in adapter.limits}
    _DEVICE = adapter.request_device_sync(required_features=feats, required_limits=limits)
    return _DEVICE


def caps_of(device=None) -> Caps:
    d = device or get_device()
    return Caps.from_adapter(d.features, dict(d.limits))


def has_timestamps(device=None) -> bool:
    d = device or get_device()
    return "timestamp-query" in d.features


# ---- compiling ----
_PIPELINES: dict = {}


def native_source(wgsl: str) -> str:
    """The WGSL as wgpu-py (naga) takes it. Naga rejects ``enable subgroups;`` (it enables subgroup
    builtins through the device feature instead) while browsers require it: the line is commented
    out, keeping every line number the same."""
    return re.sub(r"^enable subgroups;", "// enable subgroups; (naga: device feature)", wgsl,
                  flags=re.M)


def _compile_message(kernel: Kernel, e: Exception) -> str:
    text = str(e)
    # naga reports "wgsl:LINE:COL" (parse errors) or "┌─ :LINE:COL" (validation errors)
    m = re.search(r"(?:wgsl|┌─ [^:\n]*):(\d+):(\d+)", text)
    lines = kernel.wgsl.splitlines()
    reason = next((ln.strip() for ln in text.splitlines()
                   if "error" in ln.lower() and "Validation Error" not in ln), text.strip()[:200])
    detail = [ln.strip()[2:] for ln in text.splitlines() if ln.strip().startswith("= ")]
    if detail:
        reason += " (" + "; ".join(detail[:2]) + ")"
    if m:
        n = int(m.group(1))
        src = lines[n - 1].strip() if 0 < n <= len(lines) else ""
        return f"{kernel.slug}: WGSL line {n}: {reason}\n    {n} | {src}"
    return f"{kernel.slug}: {reason}"


def pipeline(kernel: Kernel, device=None):
    """(compute pipeline, bind group layout) of ``kernel``, compiled once per device."""
    import wgpu

    d = device or get_device()
    ck = (id(d), kernel.slug, hash(kernel.wgsl))
    hit = _PIPELINES.get(ck)
    if hit:
        return hit
    missing = [f for f in kernel.features if f not in d.features and
               not (f == "subgroups" and "subgroup" in d.features)]
    if missing:
        raise UnsupportedKernel(f"{kernel.slug}: device lacks features {missing}")
    try:
        module = d.create_shader_module(label=kernel.slug, code=native_source(kernel.wgsl))
    except Exception as e:
        raise ShaderCompileError(_compile_message(kernel, e)) from None
    kinds = {"read": wgpu.BufferBindingType.read_only_storage,
             "read_write": wgpu.BufferBindingType.storage,
             "uniform": wgpu.BufferBindingType.uniform}
    entries = [{"binding": i, "visibility": wgpu.ShaderStage.COMPUTE,
                "buffer": {"type": kinds[b.kind]}} for i, b in enumerate(kernel.bindings)]
    bgl = d.create_bind_group_layout(entries=entries)
    try:
        pipe = d.create_compute_pipeline(
            label=kernel.slug, layout=d.create_pipeline_layout(bind_group_layouts=[bgl]),
            compute={"module": module, "entry_point": kernel.entry,
                     "constants": dict(kernel.meta.get("constants", {}))})
    except Exception as e:
        raise ShaderCompileError(_compile_message(kernel, e)) from None
    _PIPELINES[ck] = (pipe, bgl)
    return pipe, bgl


# ---- buffers and dispatch ----
def _as_bytes(v) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    import numpy as np

    return np.ascontiguousarray(v).tobytes()


def make_buffers(buffers: dict, device=None) -> dict:
    """{name: np.ndarray | bytes | int byte size (zeroed)} -> {name: GPUBuffer} (sizes padded to 16)."""
    import wgpu

    d = device or get_device()
    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
    out = {}
    for name, v in buffers.items():
        if isinstance(v, int):
            out[name] = d.create_buffer(label=name, size=max(16, (v + 15) // 16 * 16), usage=usage)
            continue
        raw = _as_bytes(v)
        raw += b"\0" * ((-len(raw)) % 16 or (16 if not raw else 0))
        out[name] = d.create_buffer_with_data(label=name, data=raw, usage=usage)
    return out


def bind_group(kernel: Kernel, gpu_buffers: dict, params: dict | None, device=None):
    """The bind group of ``kernel`` over named GPU buffers (+ a uniform packed from ``params``)."""
    import wgpu

    d = device or get_device()
    _, bgl = pipeline(kernel, d)
    entries = []
    for i, b in enumerate(kernel.bindings):
        if b.kind == "uniform":
            if kernel.params is None:
                raise ValueError(f"{kernel.slug}: uniform binding {b.name!r} without a Params layout")
            raw = kernel.params.pack(**(params or {}))
            buf = d.create_buffer_with_data(
                data=raw, usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST)
        else:
            if b.name not in gpu_buffers:
                raise KeyError(f"{kernel.slug}: no buffer for binding {b.name!r} "
                               f"(have {sorted(gpu_buffers)})")
            buf = gpu_buffers[b.name]
        entries.append({"binding": i, "resource": {"buffer": buf, "offset": 0, "size": buf.size}})
    return d.create_bind_group(layout=bgl, entries=entries)


def _grid3(grid) -> tuple[int, int, int]:
    g = tuple(int(v) for v in grid) + (1, 1, 1)
    return g[0], g[1], g[2]


def run_steps(steps, buffers: dict, outputs=(), device=None) -> dict:
    """Dispatch ``[(kernel, params, grid), ...]`` in one compute pass over the named ``buffers``
    and read back ``outputs`` as raw uint8 arrays."""
    import numpy as np

    d = device or get_device()
    gpu = make_buffers(buffers, d)
    enc = d.create_command_encoder()
    cp = enc.begin_compute_pass()
    for kernel, params, grid in steps:
        pipe, _ = pipeline(kernel, d)
        cp.set_pipeline(pipe)
        cp.set_bind_group(0, bind_group(kernel, gpu, params, d))
        gx, gy, gz = _grid3(grid)
        if gx and gy and gz:
            cp.dispatch_workgroups(gx, gy, gz)
    cp.end()
    d.queue.submit([enc.finish()])
    return {name: np.frombuffer(d.queue.read_buffer(gpu[name]), np.uint8).copy()
            for name in outputs}


def run(kernel: Kernel, buffers: dict, params: dict | None = None, grid=(1, 1, 1),
        outputs=(), device=None) -> dict:
    """One dispatch of ``kernel``; returns {output name: np.ndarray uint8 (the buffer's bytes)}."""
    return run_steps([(kernel, params, grid)], buffers, outputs, device)


# ---- test data ----
def weight_parts(rng, fmt: str, rows: int, cols: int, group_size: int = 32, prefix: str = "w_"):
    """Random (rows, cols) weights in ``fmt``: ({prefix+part: packed bytes}, dequantized float32
    (rows, cols)). Packing and dequantization are modelfmt.quantize's, so the kernels are
    checked against the same layout the packer writes."""
    import numpy as np
    from modelfmt.quantize import dequantize, part_bytes, quantize

    w = rng.standard_normal((rows, cols)).astype(np.float32)
    # a few larger rows/groups so the scales differ widely across groups
    w *= rng.uniform(0.25, 2.0, size=(rows, 1)).astype(np.float32)
    parts = quantize(w, fmt, group_size)
    deq = dequantize(parts, fmt, rows, cols, group_size)
    return {prefix + k: part_bytes(v) for k, v in parts.items()}, deq


def compare(out, ref, tol_key: str) -> tuple[float, float, bool]:
    """(max abs error, NMSE, passed) of ``out`` against ``ref`` under ``TOL[tol_key]``."""
    import numpy as np

    o = np.asarray(out, np.float64)
    r = np.asarray(ref, np.float64)
    if o.shape != r.shape:
        return float("inf"), float("inf"), False
    if not np.all(np.isfinite(o)):
        return float("inf"), float("inf"), False
    diff = np.abs(o - r)
    err = float(diff.max(initial=0.0))
    scale = float(np.abs(r).max(initial=0.0))
    den = float((r * r).sum())
    # numpy reduces, the rule is tolerances.verdict's (the page's check applies the same one)
    nmse, ok = tolerances.verdict(err, float((diff * diff).sum()), scale, den, tol_key)
    return err, nmse, ok


def variant_name(kernel: Kernel) -> str:
    k = kernel.key
    feats = [n for n, on in (("f16", k.f16), ("subgroups", k.subgroups),
                             ("matrix", "sgm" in dict(k.dims))) if on]
    return "+".join(feats) or "fallback"


def run_case(case, caps: Caps, device=None, seed: int = 0) -> list[dict]:
    """Run ``case`` with every variant ``caps`` allows; one result row per distinct kernel."""
    import numpy as np

    d = device or get_device()
    rows, seen = [], set()
    for c in registry.variant_caps(caps):
        try:
            k = registry.kernel(case.op, c, **case.dims)
        except UnsupportedKernel as e:
            rows.append({"slug": f"{case.op}(unsupported)", "variant": "-", "shape": case.shape(),
                         "err": float("inf"), "nmse": float("inf"), "ok": False, "msg": str(e)})
            continue
        if k.slug in seen:
            continue
        seen.add(k.slug)
        inputs = case.make_inputs(np.random.default_rng(seed))
        expected = case.reference(inputs)
        if case.steps:
            steps = case.steps(c, inputs)
        else:
            grid = k.grid(**inputs.get("grid", {}))
            steps = [(k, inputs.get("params"), grid)]
        t0 = time.perf_counter()
        row = {"slug": k.slug, "variant": variant_name(k), "shape": case.shape(), "msg": ""}
        try:
            got = run_steps(steps, inputs["buffers"], list(expected), d)
        except (ShaderCompileError, UnsupportedKernel) as e:
            row.update(err=float("inf"), nmse=float("inf"), ok=False, msg=str(e))
            rows.append(row)
            continue
        errs, nmses, oks = [], [], []
        for name, ref in expected.items():
            ref = np.asarray(ref)
            out = got[name][: ref.nbytes].view(ref.dtype).reshape(ref.shape)
            e, n, ok = compare(out, ref, (k.key.f16 and case.tol_f16) or case.tol)
            errs.append(e), nmses.append(n), oks.append(ok)
        row.update(err=max(errs), nmse=max(nmses), ok=all(oks),
                   secs=time.perf_counter() - t0)
        rows.append(row)
    return rows


def check(quick: bool = True, ops=None, out=print, device=None) -> list[dict]:
    """Run every registered case (of ``ops``) with every supported variant; print one row each."""
    from . import load_ops

    load_ops()
    d = device or get_device()
    caps = caps_of(d)
    out(f"adapter: {adapter_name(d)}  caps: f16={caps.shader_f16} subgroups={caps.subgroups} "
        f"max_wg={caps.max_workgroup_size}")
    out(f"{'kernel':58s} {'variant':15s} {'shape':34s} {'max_abs_err':>11s} {'nmse':>9s} pass")
    rows = []
    for case in registry.cases(quick, ops):
        for row in run_case(case, caps, d):
            rows.append(row)
            out(f"{row['slug'][:58]:58s} {row['variant']:15s} {row['shape'][:34]:34s} "
                f"{row['err']:11.3e} {row['nmse']:9.2e} {'ok' if row['ok'] else 'FAIL'}")
            if row["msg"]:
                out("    " + row["msg"].replace("\n", "\n    "))
    bad = sum(not r["ok"] for r in rows)
    out(f"{len(rows) - bad}/{len(rows)} passed" + (f", {bad} FAILED" if bad else ""))
    sys.stdout.flush()
    return rows
