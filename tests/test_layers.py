"""The layering is a test (docs/ARCHITECTURE.md): import-linter's contracts in pyproject.toml, the browser
wheel's module-level imports, the generated storage-buffer table, and the size of every module (Python and the
page's web/*.js / *.mjs)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("modelfmt", "shaders", "weights_tool", "driver", "pybuild")
MAX_LINES = 600
# Modules allowed over MAX_LINES, each with its reason.
LONG_MODULES = {
    "tests/test_tokenizer.py": "tables of tokenizer cases (data, not logic)",
}


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def test_import_contracts_kept():
    r = _lint(REPO)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout and "KEPT" in r.stdout


@pytest.mark.parametrize("module,line,contracts", [
    ("modelfmt/formats.py", "import shaders", {"layers"}),                        # an arrow pointing up
    ("shaders/core.py", "from weights_tool import errors", {"layers"}),          # siblings are independent
    ("driver/engine.py", "def _f():\n    from driver.native import load", {"driver.native"}),  # lazy: still one
    ("shaders/core.py", "def _f():\n    import driver.native.bench", {"layers", "driver.native"}),
])
def test_import_contracts_catch_violations(tmp_path, module, line, contracts):
    """A copy of the tree with one import against the arrows breaks the named contracts, and only those."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a", encoding="utf-8") as f:
        f.write("\n" + line + "\n")
    r = _lint(tmp_path)
    assert r.returncode != 0, r.stdout[-3000:]
    broken = {ln.split(":")[0] for ln in r.stdout.splitlines() if ln.rstrip().endswith(" BROKEN")}
    assert broken == contracts, r.stdout[-3000:]


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Top-level names imported when the module is imported (imports inside functions excluded)."""
    out: list[str] = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                out.extend(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                out.append((node.module or "").split(".")[0])
            for field in ("body", "orelse", "handlers", "finalbody"):
                visit(getattr(node, field, []) or [])

    visit(tree.body)
    return out


def test_browser_wheel_imports_nothing_pyodide_lacks_at_module_level():
    """What the layout ships to the browser (pybuild.wheels.browser_files) imports only the standard library, our
    browser packages, jinja2 and Pyodide's own modules when imported: numpy / wgpu only inside functions."""
    from pybuild.wheels import PACKAGES as BROWSER, browser_files
    ok = set(sys.stdlib_module_names) | set(BROWSER) | {"jinja2", "markupsafe", "js", "pyodide"}
    bad = {}
    for rel in browser_files():
        if rel.endswith(".py"):
            names = _module_level_imports(ast.parse((REPO / rel).read_text(encoding="utf-8")))
            if set(names) - ok:
                bad[rel] = sorted(set(names) - ok)
    assert bad == {}


def test_server_imports_only_the_model_format():
    tree = ast.parse((REPO / "server.py").read_text(encoding="utf-8"))
    ours = {n for n in _module_level_imports(tree) if n in PACKAGES}
    lazy = {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert ours == {"modelfmt"} and lazy & set(PACKAGES) == {"modelfmt"}


def test_storage_buffer_table_is_generated_from_the_graph():
    """modelfmt.manifest.MIN_STORAGE_BUFFERS (what pack writes and the page checks before downloading) equals
    shaders.min_storage_buffers over the ops driver.graph declares, for every format."""
    import shaders
    from driver.graph import OPS
    from modelfmt import formats, manifest
    got = {f: shaders.min_storage_buffers(OPS, f) for f in sorted(formats.FORMATS)}
    assert manifest.MIN_STORAGE_BUFFERS == got, f"paste into modelfmt/manifest.py: MIN_STORAGE_BUFFERS = {got}"


def test_modules_stay_small():
    files = [p for d in PACKAGES + ("tests",) for p in (REPO / d).rglob("*.py")] + [REPO / "server.py"]
    # the page's own scripts too (web/dist and web/vendor are built copies and the Pyodide runtime)
    files += [p for p in (REPO / "web").iterdir() if p.suffix in (".js", ".mjs")]
    long = {}
    for p in files:
        rel = p.relative_to(REPO).as_posix()
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in LONG_MODULES:
            long[rel] = n
    assert long == {}, f"split these modules (or list them in LONG_MODULES with a reason): {long}"
    for rel in LONG_MODULES:   # an exception that no longer applies is removed
        assert len((REPO / rel).read_text(encoding="utf-8").splitlines()) > MAX_LINES, rel
