"""The kernel check on any ``driver.gpu.GPU``: the page's check mode (``/?check=1``) and its native twin.

Pure Python, no numpy / wgpu (it runs in the page's worker under Pyodide). It runs the cases that
``python -m shaders export-cases DIR`` wrote (inputs and numpy references precomputed natively, see
shaders/case_export.py) with every variant the device's caps allow, exactly as ``shaders.harness.run_case``
does: one row per distinct kernel slug of ``shaders.registry.variant_caps(gpu.caps)``, the tolerance key
``(kernel.key.f16 and case.tol_f16) or case.tol``, the pass rule ``shaders.tolerances.verdict``. It lives in
driver/ (not shaders/) because it records ``driver.gpu.Program``s: shaders imports nothing above it.

Used where wgpu-py cannot go: kernels that only exist in a browser (``chromium-experimental-subgroup-matrix``
prefill tiles) are checked on the page's own device with the same cases and tolerances as ``shaders check``.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict

from shaders import kernel as build_kernel, registry, tolerances
from shaders.core import UnsupportedKernel
from shaders.harness import variant_name

from . import gpu as g

# numpy dtype name -> struct code (little-endian), for the expected outputs
_CODES = {"float32": "f", "float16": "e", "float64": "d", "int32": "i", "uint32": "I", "int64": "q",
          "uint64": "Q", "int16": "h", "uint16": "H", "int8": "b", "uint8": "B"}
_ALIGN = 16


class BadCases(ValueError):
    """The exported cases do not fit together (missing / other cases.bin, unknown format)."""

    kind = "check-cases"
    hint = "Export the cases again: python -m shaders export-cases DIR [--op OP ...]."


def load_cases(cases_json: str, blob: bytes) -> dict:
    """The exported document, checked against its blob (length and sha256)."""
    doc = json.loads(cases_json)
    if doc.get("version") != 1:
        raise BadCases(f"cases.json format {doc.get('version')!r}, this runner reads 1")
    if len(blob) != doc["bin_bytes"] or hashlib.sha256(blob).hexdigest() != doc["bin_sha256"]:
        raise BadCases(f"cases.bin ({len(blob)} bytes) is not the one cases.json describes "
                       f"({doc['bin_bytes']} bytes, sha256 {doc['bin_sha256'][:12]}...)")
    return doc


def values(raw: bytes, dtype: str) -> list:
    """The flat list of numbers of ``raw`` as ``dtype`` (numpy's name)."""
    code = _CODES.get(dtype)
    if code is None:
        raise BadCases(f"expected output of dtype {dtype!r}: not one of {sorted(_CODES)}")
    n = len(raw) // struct.calcsize(code)
    return list(struct.unpack(f"<{n}{code}", raw[: n * struct.calcsize(code)]))


def _padded(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % _ALIGN or (_ALIGN if not raw else 0))


async def run_case(gpu: g.GPU, case: dict, blob: bytes) -> list[dict]:
    """Every variant of one exported case on ``gpu``: rows {slug, variant, shape, err, nmse, ok, msg}."""
    rows, seen = [], set()
    for caps in registry.variant_caps(gpu.caps):
        try:
            k = build_kernel(case["op"], caps, **case["dims"])
        except UnsupportedKernel as e:
            rows.append({"slug": f"{case['op']}(unsupported)", "variant": "-", "shape": case["shape"],
                         "err": math.inf, "nmse": math.inf, "ok": False, "msg": str(e)})
            continue
        if k.slug in seen:
            continue
        seen.add(k.slug)
        row = {"slug": k.slug, "variant": variant_name(k), "shape": case["shape"], "msg": ""}
        try:
            bufs = await _dispatch(gpu, k, case, blob)
        except (g.GPUError, UnsupportedKernel) as e:   # ShaderError, FeatureMissing, LimitTooLow
            row.update(err=math.inf, nmse=math.inf, ok=False, msg=str(e))
            rows.append(row)
            continue
        key = (k.key.f16 and case["tol_f16"]) or case["tol"]
        errs, nmses, oks = [], [], []
        for name, spec in case["expected"].items():
            ref = values(blob[spec["offset"]: spec["offset"] + spec["length"]], spec["dtype"])
            got = values(await gpu.read(bufs[name], 0, spec["length"]), spec["dtype"])
            e, n, ok = tolerances.compare_values(got, ref, key)
            errs.append(e), nmses.append(n), oks.append(ok)
        row.update(err=max(errs), nmse=max(nmses), ok=all(oks))
        rows.append(row)
    return rows


async def _dispatch(gpu: g.GPU, k, case: dict, blob: bytes) -> dict:
    """Create the case's buffers (fresh per variant: outputs start from the exported state), record and
    submit one dispatch of ``k``; returns {binding name: buffer}."""
    bufs, entries = {}, {}
    for b in k.bindings:
        if b.kind == "uniform":
            raw = k.params.pack(**(case["params"] or {}))
            buf = gpu.create_buffer(len(raw), g.UNIFORM, f"{k.slug}.params")
            gpu.write_buffer(buf, 0, raw)
            entries[b.name] = (buf, 0, len(raw))
            continue
        spec = case["inputs"].get(b.name)
        if spec is None:
            raise UnsupportedKernel(f"{k.slug}: the exported case has no buffer {b.name!r} "
                                    f"(have {sorted(case['inputs'])}); export the cases again")
        if "zeros" in spec:
            size = max(_ALIGN, -(-spec["zeros"] // _ALIGN) * _ALIGN)
            buf = gpu.create_buffer(size, g.STORAGE, b.name)      # WebGPU buffers start zeroed
        else:
            raw = _padded(blob[spec["offset"]: spec["offset"] + spec["length"]])
            size = len(raw)
            buf = gpu.create_buffer(size, g.STORAGE, b.name)
            gpu.write_buffer(buf, 0, raw)
        bufs[b.name] = buf
        entries[b.name] = (buf, 0, size)
    pipe = gpu.create_pipeline(k)
    prog = g.Program()
    grid = k.grid(**(case["grid"] or {}))
    if min(grid) >= 1:          # an empty grid dispatches nothing (as harness.run_steps)
        prog.dispatch(pipe, gpu.create_bind_group(pipe, k, entries), grid, k.slug)
    gpu.submit(prog)
    return bufs


async def run_all(gpu: g.GPU, doc: dict, blob: bytes, ops=None, on_row=None) -> list[dict]:
    """Every exported case (of ``ops``) x every variant; ``on_row(row)`` after each row."""
    ops = [registry.COVERED_BY.get(o, o) for o in ops] if ops else None
    have = {c["op"] for c in doc["cases"]}
    missing = [o for o in ops or () if o not in have]
    if missing:
        raise BadCases(f"the exported cases hold no {', '.join(missing)} case "
                       f"(they hold {', '.join(sorted(have)) or 'none'})")
    rows = []
    for case in doc["cases"]:
        if ops and case["op"] not in ops:
            continue
        for row in await run_case(gpu, case, blob):
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def _finite(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None   # JSON has no inf


def report(gpu: g.GPU, doc: dict, rows: list[dict]) -> dict:
    """The page's POST body: rows (inf as null), counts, the adapter and the caps the variants came from."""
    return {"rows": [{k: _finite(v) for k, v in r.items()} for r in rows],
            "passed": sum(r["ok"] for r in rows), "total": len(rows),
            "skipped": doc.get("skipped", []), "quick": doc.get("quick"),
            "adapter": dict(gpu.info), "features": sorted(gpu.features), "caps": asdict(gpu.caps)}


async def check_page(cases_json: str, blob, ops=None, on_row=None) -> str:
    """The worker's entry point (web/worker.js ``check``): open the device as a model load does
    (``JsBackend.create``, the page's device options), run every case, return the report as JSON."""
    from .backend_js import JsBackend, _reported

    @_reported
    async def go():
        data = blob.to_bytes() if hasattr(blob, "to_bytes") else bytes(blob)
        doc = load_cases(cases_json, data)
        gpu = await JsBackend.create()
        try:
            want = list(ops.to_py()) if hasattr(ops, "to_py") else list(ops or [])
            cb = (lambda r: on_row(json.dumps({k: _finite(v) for k, v in r.items()}))) if on_row else None
            rows = await run_all(gpu, doc, data, want, cb)
            return json.dumps(report(gpu, doc, rows))
        finally:
            gpu.destroy()
    return await go()
