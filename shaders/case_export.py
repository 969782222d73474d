"""Export the registered check cases for the page's check mode: ``python -m shaders export-cases DIR``.

Native only (numpy, imported inside ``export``). The browser has no numpy, so the inputs and the numpy
references of every single-dispatch case are computed here, once, and written as

    DIR/cases.bin    the bytes: every input buffer and every expected output, back to back (16-aligned)
    DIR/cases.json   {"version", "quick", "ops", "bin_bytes", "skipped": [...], "cases": [{
                        op, dims, label, shape, tol, tol_f16, params, grid,
                        inputs:   {binding: {offset, length} | {zeros: byte size}},
                        expected: {binding: {dtype, shape, offset, length}}}, ...]}

which ``driver.kernel_check`` runs on any ``driver.gpu.GPU`` (the page's device, or wgpu-py natively).
Inputs use seed 0 as ``harness.run_case`` does, so both checks see the same numbers. Cases with several
dispatches (``case.steps``) are left out and named on stdout. Both files are written to temporary names
and renamed, an old cases.json removed first and the new one written last: a cases.json present
always describes a complete cases.bin (``bin_bytes`` / ``bin_sha256`` say which).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import registry

FORMAT_VERSION = 1


class ExportError(ValueError):
    """Bad input of the export (unknown op, unwritable folder): one line for the CLI."""


def _plain(v):
    """JSON-safe copy of params / grid / dims values (numpy scalars become int / float)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, str)) or v is None:
        return v
    if hasattr(v, "item"):          # numpy scalar
        v = v.item()
    if isinstance(v, int):
        return int(v)
    return float(v)


def resolve_ops(ops) -> list[str] | None:
    """``ops`` with helper ops mapped to the op whose cases run them (as ``shaders check``); raises
    ExportError naming an op with no check cases."""
    if not ops:
        return None
    out = list(dict.fromkeys(registry.COVERED_BY.get(o, o) for o in ops))
    unknown = [o for o in out if o not in registry.case_ops()]
    if unknown:
        raise ExportError(f"no check cases for op(s) {unknown}; known: {', '.join(registry.case_ops())}")
    return out


def export(out_dir, quick: bool = True, ops=None, out=print) -> dict:
    """Write DIR/cases.json + DIR/cases.bin for every single-dispatch case (of ``ops``); returns the
    JSON document. Prints one line per case left out (multi-dispatch) and a summary."""
    import numpy as np

    from . import load_ops

    load_ops()
    ops = resolve_ops(ops)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{out_dir}: cannot create the folder ({e.strerror or e}); pass a writable DIR")
    if not os.access(out_dir, os.W_OK):
        raise ExportError(f"{out_dir}: not writable; pass a writable DIR")
    blob = bytearray()

    def put(raw: bytes) -> dict:
        off = len(blob)
        blob.extend(raw)
        blob.extend(b"\0" * (-len(blob) % 16))   # every piece starts 16-aligned
        return {"offset": off, "length": len(raw)}

    cases, skipped = [], []
    for case in registry.cases(quick, ops):
        if case.steps is not None:
            skipped.append(f"{case.op} {case.shape()}")
            out(f"skipped (several dispatches, not exported): {case.op} {case.shape()}")
            continue
        inputs = case.make_inputs(np.random.default_rng(0))   # seed 0, as harness.run_case
        expected = case.reference(inputs)
        ins = {}
        for name, v in inputs["buffers"].items():
            if isinstance(v, int):                              # a zeroed output of v bytes
                ins[name] = {"zeros": int(v)}
            elif isinstance(v, (bytes, bytearray, memoryview)):
                ins[name] = put(bytes(v))
            else:
                ins[name] = put(np.ascontiguousarray(v).tobytes())
        exp = {}
        for name, ref in expected.items():
            ref = np.ascontiguousarray(ref)
            exp[name] = {"dtype": ref.dtype.name, "shape": list(ref.shape), **put(ref.tobytes())}
        cases.append({"op": case.op, "dims": _plain(case.dims), "label": case.label,
                      "shape": case.shape(), "tol": case.tol, "tol_f16": case.tol_f16,
                      "params": _plain(inputs.get("params")), "grid": _plain(inputs.get("grid", {})),
                      "inputs": ins, "expected": exp})
    doc = {"version": FORMAT_VERSION, "quick": bool(quick), "ops": ops, "bin_bytes": len(blob),
           "bin_sha256": hashlib.sha256(blob).hexdigest(), "skipped": skipped, "cases": cases}
    try:
        (out_dir / "cases.json").unlink(missing_ok=True)   # an old index never describes the new blob
        _write_atomic(out_dir / "cases.bin", bytes(blob))
        _write_atomic(out_dir / "cases.json", json.dumps(doc, indent=1).encode())   # last: the marker
    except OSError as e:
        raise ExportError(f"{out_dir}: cannot write the cases ({e.strerror or e}); pass a writable DIR")
    out(f"exported {len(cases)} cases ({len(blob)} bytes) to {out_dir}/cases.json + cases.bin"
        + (f"; {len(skipped)} multi-dispatch cases left out" if skipped else ""))
    return doc


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
