"""Every registered kernel check case (quick sweep), each with every variant the adapter supports:
the same cases as ``python -m shaders check --quick``, one pytest item per case.

Numpy references run on the same dequantized weights (kernel error only). Needs a WebGPU adapter
through wgpu-py (lavapipe in CI); with WGPU_EXPECT_ADAPTER set a missing adapter fails.
"""

from __future__ import annotations

import pytest

import shaders
from shaders import registry

shaders.load_ops()
_CASES = registry.cases(quick=True)


@pytest.fixture(scope="module")
def gpu():
    from shaders import harness

    dev = harness.get_device()
    return dev, harness.caps_of(dev)


def test_every_op_has_cases():
    missing = [op for op in shaders.all_ops()
               if op not in registry.case_ops() and op not in registry.COVERED_BY]
    assert not missing, (f"ops without check cases: {missing} (declare cases, or "
                         f"register_cases(op, covers=(...)) on the op whose steps run them)")


@pytest.mark.gpu
@pytest.mark.parametrize("case", _CASES, ids=[f"{c.op}-{c.shape()}" for c in _CASES])
def test_case(case, gpu):
    from shaders import harness

    dev, caps = gpu
    rows = harness.run_case(case, caps, dev)
    assert rows, "no variant ran"
    bad = [r for r in rows if not r["ok"]]
    assert not bad, "\n".join(f"{r['slug']} [{r['variant']}] {r['shape']}: max_abs_err="
                              f"{r['err']:.3e} nmse={r['nmse']:.2e} {r['msg']}" for r in bad)
