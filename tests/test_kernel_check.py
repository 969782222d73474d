"""The page's kernel check (driver.kernel_check over ``python -m shaders export-cases``) natively: on the wgpu-py
backend it gives the rows of ``shaders.harness.check`` on the same device (same slugs, variants, shapes, pass/fail,
errors); the pure-Python pass rule equals numpy's; the export refuses bad input in one line (exit 2) and never leaves
a cases.json describing another cases.bin. The same runner in Chromium: tests/test_browser_check.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driver import kernel_check as kc
from shaders import case_export, harness, tolerances

REPO = Path(__file__).resolve().parent.parent
OPS = ["matmul", "gate_up"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("cases")
    lines: list[str] = []
    doc = case_export.export(d, quick=True, ops=OPS, out=lines.append)
    return d, doc, lines


def test_export_files_and_layout(exported):
    d, doc, lines = exported
    blob = (d / "cases.bin").read_bytes()
    assert kc.load_cases((d / "cases.json").read_text(), blob)["cases"] == doc["cases"]
    assert {c["op"] for c in doc["cases"]} == set(OPS) and doc["quick"] is True
    assert lines[-1].startswith(f"exported {len(doc['cases'])} cases")
    case = next(c for c in doc["cases"] if c["op"] == "matmul" and c["dims"]["fmt"] == "f32")
    # the x input is the seed-0 draw harness.run_case makes, byte for byte
    from shaders import registry
    ref = next(c for c in registry.cases(True, ["matmul"]) if c.shape() == case["shape"])
    x = ref.make_inputs(np.random.default_rng(0))["x"]
    spec = case["inputs"]["x"]
    assert blob[spec["offset"]: spec["offset"] + spec["length"]] == x.tobytes()
    assert all(s["offset"] % 16 == 0 for c in doc["cases"] for s in [*c["inputs"].values(), *c["expected"].values()]
               if "offset" in s)


def test_export_lists_multi_dispatch_cases(tmp_path):
    """attention_decode's split-K cases have several dispatches: named on stdout, not exported."""
    lines: list[str] = []
    doc = case_export.export(tmp_path, quick=True, ops=["attention_decode"], out=lines.append)
    left = [ln for ln in lines if ln.startswith("skipped (several dispatches")]
    assert left and len(left) == len(doc["skipped"])
    assert all("steps" not in c for c in doc["cases"])


def test_blob_mismatch_refused(exported):
    d, doc, _ = exported
    blob = bytearray((d / "cases.bin").read_bytes())
    blob[0] ^= 1
    with pytest.raises(kc.BadCases, match="not the one cases.json describes"):
        kc.load_cases((d / "cases.json").read_text(), bytes(blob))


@pytest.mark.parametrize("seed", range(4))
def test_pure_compare_is_numpy_compare(seed):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(200).astype(np.float32)
    for scale in (0.0, 1e-7, 1e-5, 1e-3, 1e-1):
        out = (ref + scale * rng.standard_normal(200)).astype(np.float32)
        for key in ("f32", "dot_f32", "dot_f16", "exact"):
            a = harness.compare(out, ref, key)
            b = tolerances.compare_values(out.tolist(), ref.tolist(), key)
            assert a[2] == b[2] and a[0] == b[0] and a[1] == pytest.approx(b[1], rel=1e-9, abs=1e-300), (key, a, b)
    bad = ref.copy()
    bad[3] = np.nan
    assert tolerances.compare_values(bad.tolist(), ref.tolist(), "f32")[2] is False
    assert tolerances.compare_values([0.0] * 3, [0.0] * 3, "exact") == (0.0, 0.0, True)


@pytest.mark.gpu
def test_runner_on_wgpu_matches_shaders_check(exported, backend):
    """The same rows as ``python -m shaders check --quick --op matmul --op gate_up`` on this device."""
    d, doc, _ = exported
    blob = (d / "cases.bin").read_bytes()
    rows = asyncio.run(kc.run_all(backend, doc, blob))
    # the cases of several dispatches (gate_up on quant_x's records) are not exported
    multi = {s.split(" ", 1)[1] for s in doc["skipped"]}
    assert any(s.endswith("via quant_x") for s in multi)
    want = [r for r in harness.check(quick=True, ops=OPS, out=lambda *a: None)
            if r["shape"] not in multi]
    key = lambda r: (r["slug"], r["variant"], r["shape"], r["ok"])   # noqa: E731
    assert [key(r) for r in rows] == [key(r) for r in want]
    for a, b in zip(rows, want):
        assert a["err"] == pytest.approx(b["err"], rel=1e-6, abs=1e-12), (a, b)
    rep = kc.report(backend, doc, rows)
    assert rep["total"] == len(want) and rep["passed"] == sum(r["ok"] for r in want)
    json.dumps(rep, allow_nan=False)   # what the page POSTs is plain JSON


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shaders", "export-cases", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cli_bad_input_one_line_exit_2(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    for args, what in [((str(f / "sub"),), "cannot create the folder"),
                       ((str(tmp_path / "ok"), "--op", "nope"), "no check cases for op(s) ['nope']")]:
        r = _cli(*args)
        assert r.returncode == 2, r
        assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and what in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "ok" / "cases.json").exists()


def test_cli_export_replaces_atomically(tmp_path):
    r = _cli(str(tmp_path), "--op", "rope")
    assert r.returncode == 0, r.stderr
    first = json.loads((tmp_path / "cases.json").read_text())
    r = _cli(str(tmp_path), "--op", "embed")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "cases.json").read_text())
    assert doc["ops"] == ["embed"] and doc != first
    kc.load_cases((tmp_path / "cases.json").read_text(), (tmp_path / "cases.bin").read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.bin", "cases.json"]   # no temp file left


def test_op_not_exported_refused(exported):
    d, doc, _ = exported
    with pytest.raises(kc.BadCases, match="hold no rope case"):
        asyncio.run(kc.run_all(None, doc, b"", ["rope"]))
