"""Unpack the pinned Pyodide runtime and register our wheels in its lockfile.

``web/vendor/pyodide/`` gets the runtime files (``pins.RUNTIME_FILES``), our wheels beside ``pyodide.asm.wasm``
(the lockfile's ``file_name`` resolves against the page's ``indexURL``) and a ``pyodide-lock.json`` made by
``pyodide lockfile add-wheels`` from the tarball's pristine lock, so every build gives the same lock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .fetch import BuildError
from .pins import RUNTIME_FILES


def unpack_runtime(tarball: Path, dest: Path) -> Path:
    """Write the runtime files of the npm tarball into ``dest`` (replaced atomically); return the pristine lock."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-pyodide-", dir=dest.parent))
    try:
        with tarfile.open(tarball, "r:gz") as t:
            for m in t:
                name = m.name.split("/", 1)[-1]
                if m.isfile() and m.name.startswith("package/") and name in RUNTIME_FILES:
                    with t.extractfile(m) as src, open(tmp / name, "wb") as out:
                        shutil.copyfileobj(src, out)
        missing = [f for f in RUNTIME_FILES if not (tmp / f).is_file()]
        if missing:
            raise BuildError(f"{tarball}: lacks {', '.join(missing)}; the pin in pybuild/pins.py is wrong")
        os.replace(tmp / "pyodide-lock.json", tmp / "pyodide-lock.orig.json")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / "pyodide-lock.orig.json"


def pyodide_cli() -> str:
    """The ``pyodide`` CLI of pyodide-build, next to this Python (the project's .venv)."""
    exe = Path(sys.executable).parent / "pyodide"
    if exe.is_file():
        return str(exe)
    found = shutil.which("pyodide")
    if found is None:
        raise BuildError("pyodide CLI (pyodide-build 0.39.2) not found; install it: "
                         ".venv/bin/pip install pyodide-build==0.39.2 pkginfo")
    return found


def add_wheels(pristine: Path, wheels: list[Path], out: Path) -> dict:
    """Run ``pyodide lockfile add-wheels`` on the pristine lock; write ``out`` and return it parsed."""
    tmp = out.with_name(out.name + ".tmp")
    cmd = [pyodide_cli(), "lockfile", "add-wheels", "--input", str(pristine), "--output", str(tmp),
           "--base-path", str(out.parent), *map(str, wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=out.parent)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        tmp.unlink(missing_ok=True)
        raise BuildError(f"`pyodide lockfile add-wheels` failed: {last}")
    lock = json.loads(tmp.read_text(encoding="utf-8"))
    # canonical formatting so that a rebuild is byte-identical
    out.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.unlink()
    return lock
