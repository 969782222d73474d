"""Pinned inputs of the build: every archive by version AND hash (checked before use)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pin:
    registry: str       # "npm" or "pypi"
    spec: str           # what the registry client is asked for
    archive: str        # the file name the client writes
    sha256: str         # of the archive
    integrity: str = "" # npm dist.integrity (sha512, base64), checked as well
    sdist: bool = False # pypi: the source archive


PYODIDE_VERSION = "314.0.7"
PYODIDE = Pin(
    registry="npm", spec=f"pyodide@{PYODIDE_VERSION}", archive=f"pyodide-{PYODIDE_VERSION}.tgz",
    sha256="66b7949e5a0cba2250b586d7e368bf12fb482800748d182c4618254b685ffaa0",
    integrity="sha512-0YvXxEhfEdpLfb/XkM2BFAeMROq0iMUX2bzzH9pOttyMcWkwq+HbE5uyuGD82LN7y2q+SNvi/6V5JEsOlD2R1A==",
)
JINJA2 = Pin(
    registry="pypi", spec="jinja2==3.1.6", archive="jinja2-3.1.6-py3-none-any.whl",
    sha256="85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67",
)
# PyPI has only CPython-ABI wheels for markupsafe 3.0.4; its sdist is turned into a pure wheel (pybuild.wheels)
MARKUPSAFE = Pin(
    registry="pypi", spec="markupsafe==3.0.4", archive="markupsafe-3.0.4.tar.gz",
    sha256="2e9ad7dd851bf45fab9f75cbff4cb493fee9979e8d8c7c9c3ee119022518edd6", sdist=True,
)
# axe-core: the accessibility checker of the browser tests (tests/test_browser.py injects its axe.min.js into the
# page); fetched by the set-up like the rest, never shipped in web/dist, never committed. MPL-2.0.
AXE_CORE_VERSION = "4.10.3"
AXE_CORE = Pin(
    registry="npm", spec=f"axe-core@{AXE_CORE_VERSION}", archive=f"axe-core-{AXE_CORE_VERSION}.tgz",
    sha256="0f2b4d7dcdf7d1219df8d1959ad68e565f51d14c3f0d88bb71cd59abeb956292",
    integrity="sha512-Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg==",
)
PINS = (PYODIDE, JINJA2, MARKUPSAFE, AXE_CORE)

# the runtime files the page needs (the rest of the npm package is docs, maps and type stubs)
RUNTIME_FILES = ("pyodide.js", "pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json", "package.json")
