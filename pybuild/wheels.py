"""Deterministic pure-Python wheels: the browser package (``modelfmt`` + ``driver`` + ``shaders``, minus the
native-only paths) and markupsafe from its sdist.

Wheels are zip files written with fixed timestamps and sorted entries, so rebuilding unchanged sources gives
byte-identical wheels (and the same sha256 in the lockfile).
"""

from __future__ import annotations

import base64
import hashlib
import re
import tarfile
import zipfile
from pathlib import Path

from .fetch import REPO, BuildError

BROWSER_DIST = "llama3-webgpu-browser"   # the name the worker passes to pyodide.loadPackage
# The browser wheel by LAYOUT (docs/ARCHITECTURE.md): these packages, minus the native-only paths below. Nothing is
# decided by reading imports; tests/test_layers.py checks that what ships imports no numpy / wgpu at module level.
PACKAGES = ("modelfmt", "driver", "shaders")
NATIVE_ONLY = ("driver/native/", "modelfmt/quantize.py", "modelfmt/kquant.py")
DATA_SUFFIXES = (".wgsl", ".json")       # non-Python files shipped with the packages
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def project_version() -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not m:
        raise BuildError(f"{REPO / 'pyproject.toml'}: no version = \"...\" line; add one")
    return m.group(1)


def browser_files(root: Path = REPO) -> list[str]:
    """'pkg/.../file' paths of the browser wheel: every .py and data file of PACKAGES, minus NATIVE_ONLY."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or "__pycache__" in rel or rel.startswith(NATIVE_ONLY):
                continue
            if path.suffix == ".py" or path.suffix in DATA_SUFFIXES:
                out.append(rel)
    return out


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
    """The ``llama3_webgpu_browser`` wheel: modelfmt, driver and shaders minus NATIVE_ONLY, with their data files."""
    files = {rel: (root / rel).read_bytes() for rel in browser_files(root)}
    for pkg in PACKAGES:
        if f"{pkg}/__init__.py" not in files:
            raise BuildError(f"{root / pkg / '__init__.py'}: missing; the browser wheel needs it")
    log(f"  browser wheel: {', '.join(PACKAGES)} minus {', '.join(NATIVE_ONLY)} ({len(files)} files)")
    version = project_version()
    metadata = (f"Metadata-Version: 2.1\nName: {BROWSER_DIST}\nVersion: {version}\n"
                "Summary: Browser half of llama3-webgpu (modelfmt + driver core + shaders) for Pyodide\n"
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
