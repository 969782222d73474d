"""The page's kernel check (/?check=1, issue 14) in headless Chromium on SwiftShader: the shader check cases that
``python -m shaders export-cases`` wrote (the site exports matmul's quick set, tests/_browser.py) run on the page's own
device through driver.kernel_check, every variant its caps allow; every row passes, the rows are the cases x the
distinct kernels of ``shaders.registry.variant_caps`` of the caps the page reports, and the report reaches
server.py's --check-out. The native twin (same runner on wgpu-py == ``shaders check``): tests/test_kernel_check.py.
"""

from __future__ import annotations

import json
import time

import pytest

from _browser import CHECK_OPS, ERROR_TEXT

pytestmark = pytest.mark.browser


def _caps(d: dict):
    from shaders.core import Caps
    return Caps(**{k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
                   for k, v in d.items()})


def test_check_page_runs_every_case_and_variant(browser, site):
    page = browser["page"]
    n0 = len(site["check_out"].read_text().splitlines()) if site["check_out"].exists() else 0
    page.goto(site["url"] + "?check=1&" + "&".join(f"op={o}" for o in CHECK_OPS))
    page.wait_for_function(f"(window.__app && window.__app.check) || {ERROR_TEXT}", timeout=600_000)
    err = page.evaluate(ERROR_TEXT)
    assert not err, f"the page reported: {err}"
    rep = page.evaluate("window.__app.check")
    bad = [r for r in rep["rows"] if not r["ok"]]
    assert not bad, "\n".join(f"{r['slug']} [{r['variant']}] {r['shape']}: err={r['err']} nmse={r['nmse']} {r['msg']}"
                              for r in bad)
    # the expected row count, from the exported cases and the page's caps (pure Python, no GPU)
    import shaders
    from shaders import registry
    doc = json.loads((site["check_cases"] / "cases.json").read_text())
    caps = _caps(rep["caps"])
    want = []
    for case in doc["cases"]:
        slugs = []
        for c in registry.variant_caps(caps):
            s = shaders.kernel(case["op"], c, **case["dims"]).slug
            if s not in slugs:
                slugs.append(s)
        want += [(s, case["shape"]) for s in slugs]
    assert [(r["slug"], r["shape"]) for r in rep["rows"]] == want
    assert rep["total"] == rep["passed"] == len(want) >= len(doc["cases"])
    assert page.evaluate("document.getElementById('modelstate').textContent") == \
        f"kernel check: {len(want)}/{len(want)} passed"
    # the POST reached server.py --check-out, with the adapter (state.check is set just before the POST)
    for _ in range(100):
        lines = site["check_out"].read_text().splitlines() if site["check_out"].exists() else []
        if len(lines) > n0:
            break
        time.sleep(0.1)
    assert len(lines) == n0 + 1
    posted = json.loads(lines[-1])
    assert posted["total"] == len(want) and posted["adapter"]["vendor"] is not None and posted["ops"] == CHECK_OPS


def test_check_page_op_not_exported_says_so(browser, site):
    """An op the export does not hold is a plain error naming it, not an empty "0/0 passed"."""
    page = browser["page"]
    page.goto(site["url"] + "?check=1&op=rope")
    page.wait_for_function(f"(window.__app && window.__app.check) || {ERROR_TEXT}", timeout=300_000)
    err = page.evaluate(ERROR_TEXT)
    assert err.startswith("The kernel check cannot run its cases (the exported cases hold no rope case"), err
