"""Deterministic pure-Python wheels: the browser package (``driver`` + ``shaders``) and markupsafe from its sdist.

Wheels are zip files written with fixed timestamps and sorted entries, so rebuilding unchanged sources gives
byte-identical wheels (and the same sha256 in the lockfile).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import re
import sys
import tarfile
import zipfile
from pathlib import Path

from .fetch import REPO, BuildError

BROWSER_DIST = "llama3-webgpu-browser"   # the name the worker passes to pyodide.loadPackage
PACKAGES = ("driver", "shaders")
DATA_SUFFIXES = (".wgsl", ".json")       # non-Python files shipped with the packages
# imports that exist in the browser: stdlib, our packages, the wheels we ship, Pyodide's own modules
BROWSER_OK = set(sys.stdlib_module_names) | {"driver", "shaders", "jinja2", "markupsafe", "js", "pyodide",
                                              "_pyodide", "pyodide_js"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def project_version() -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not m:
        raise BuildError(f"{REPO / 'pyproject.toml'}: no version = \"...\" line; add one")
    return m.group(1)


# ---- which modules run in the browser ----

def _module_level_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """(absolute top-level name or '.relative', level) of imports executed at import time (not in functions)."""
    out: list[tuple[str, int]] = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                out.extend((a.name, 0) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    mods = [node.module] if node.module else [a.name for a in node.names]
                    out.extend((m, node.level) for m in mods)
                else:
                    out.append((node.module or "", 0))
                    if node.module in PACKAGES:  # `from driver import engine` imports driver/engine.py
                        out.extend((f"{node.module}.{a.name}", 0) for a in node.names)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
                continue
            for field in ("body", "orelse", "handlers", "finalbody"):
                visit(getattr(node, field, []) or [])

    visit(tree.body)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def browser_modules(root: Path = REPO) -> tuple[list[str], dict[str, str]]:
    """(included 'pkg/mod.py' paths, {excluded path: why}) for the browser wheel.

    A module is left out when it imports, at module level, anything Pyodide lacks (numpy, wgpu, ...) or a module
    of ours that is itself left out. Lazy imports inside functions are allowed (native-only helpers).
    """
    mods: dict[str, list[tuple[str, str]]] = {}  # path -> [(kind, name)]
    for pkg in PACKAGES:
        for path in sorted((root / pkg).glob("*.py")):
            rel = f"{pkg}/{path.name}"
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            deps = []
            for name, level in _module_level_imports(tree):
                if level:
                    deps.append(("ours", f"{pkg}/{name.split('.')[0]}.py"))
                elif name.split(".")[0] in PACKAGES:
                    parts = name.split(".")
                    deps.append(("ours", f"{parts[0]}/{parts[1]}.py" if len(parts) > 1 else f"{parts[0]}/__init__.py"))
                else:
                    deps.append(("ext", name.split(".")[0]))
            mods[rel] = deps
    excluded: dict[str, str] = {}
    for rel, deps in mods.items():
        bad = [n for kind, n in deps if kind == "ext" and n not in BROWSER_OK]
        if bad:
            excluded[rel] = f"imports {', '.join(sorted(set(bad)))} at module level"
    changed = True
    while changed:  # a module importing an excluded module of ours is excluded too
        changed = False
        for rel, deps in mods.items():
            if rel in excluded:
                continue
            hit = [n for kind, n in deps if kind == "ours" and n in excluded]
            if hit:
                excluded[rel] = f"imports {hit[0]} (left out) at module level"
                changed = True
    return sorted(r for r in mods if r not in excluded), excluded


# ---- wheel writing ----

def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def write_wheel(out_dir: Path, name: str, version: str, files: dict[str, bytes], metadata: str) -> Path:
    """Write ``{name}-{version}-py3-none-any.whl`` holding ``files`` (arcname -> bytes) and return its path."""
    base = f"{norm_name(name)}-{version}"
    info = f"{base}.dist-info"
    entries = dict(sorted(files.items()))
    entries[f"{info}/METADATA"] = metadata.encode("utf-8")
    entries[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: pybuild\nRoot-Is-Purelib: true\n"
                                b"Tag: py3-none-any\n")
    record = "".join(f"{arc},sha256={_b64(hashlib.sha256(data).digest())},{len(data)}\n"
                     for arc, data in entries.items())
    entries[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode("utf-8")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{base}-py3-none-any.whl"
    tmp = path.with_suffix(".whl.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in entries.items():
            zi = zipfile.ZipInfo(arc, ZIP_DATE)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    tmp.replace(path)
    return path


def build_browser_wheel(out_dir: Path, root: Path = REPO, log=lambda s: None) -> Path:
    """The ``llama3_webgpu_browser`` wheel: browser-safe modules of driver/ and shaders/ plus their data files."""
    included, excluded = browser_modules(root)
    for rel, why in sorted(excluded.items()):
        log(f"  left out of the browser wheel: {rel} ({why})")
    files = {rel: (root / rel).read_bytes() for rel in included}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).iterdir()):
            if path.is_file() and path.suffix in DATA_SUFFIXES:
                files[f"{pkg}/{path.name}"] = path.read_bytes()
    for pkg in PACKAGES:
        if f"{pkg}/__init__.py" not in files:
            raise BuildError(f"{root / pkg / '__init__.py'}: missing or not browser-safe; the browser wheel needs it")
    version = project_version()
    metadata = (f"Metadata-Version: 2.1\nName: {BROWSER_DIST}\nVersion: {version}\n"
                "Summary: Browser half of llama3-webgpu (driver + shaders) for Pyodide\n"
                "Requires-Python: >=3.12\nRequires-Dist: jinja2\n")
    return write_wheel(out_dir, BROWSER_DIST, version, files, metadata)


def build_markupsafe_wheel(sdist: Path, out_dir: Path) -> Path:
    """A pure-Python wheel from markupsafe's sdist: its .py files only (no ``_speedups`` C extension)."""
    files: dict[str, bytes] = {}
    metadata = None
    version = None
    with tarfile.open(sdist, "r:gz") as t:
        for m in t:
            if not m.isfile():
                continue
            parts = m.name.split("/")
            if len(parts) == 2 and parts[1] == "PKG-INFO":
                metadata = t.extractfile(m).read().decode("utf-8")
            elif len(parts) == 4 and parts[1:3] == ["src", "markupsafe"] and (
                    parts[3].endswith(".py") or parts[3] == "py.typed"):
                files[f"markupsafe/{parts[3]}"] = t.extractfile(m).read()
    if metadata is None or "markupsafe/__init__.py" not in files:
        raise BuildError(f"{sdist}: not a markupsafe sdist (no PKG-INFO or src/markupsafe/__init__.py)")
    m = re.search(r"^Version:\s*(\S+)", metadata, re.MULTILINE)
    version = m.group(1) if m else None
    if not version:
        raise BuildError(f"{sdist}: PKG-INFO has no Version")
    return write_wheel(out_dir, "MarkupSafe", version, files, metadata)
