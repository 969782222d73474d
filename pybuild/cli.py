"""``python -m pybuild [--force] [--web DIR]``: fetch the runtime, build the wheels and lockfile, hash the assets."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import pins
from .assets import build_dist
from .fetch import REPO, BuildError, ensure
from .runtime import add_wheels, unpack_runtime
from .wheels import BROWSER_DIST, build_browser_wheel, build_markupsafe_wheel


@dataclass
class BuildSummary:
    vendor: Path
    dist: Path
    wheels: list[Path]
    lock_entries: dict
    assets: dict


def build(src: Path = REPO / "web", out: Path | None = None, force: bool = False,
          log: Callable[[str], None] = lambda s: None) -> BuildSummary:
    """Build ``out/vendor/pyodide`` and ``out/dist`` (``out`` defaults to ``src``) from the pinned inputs."""
    out = out or src
    vendor = out / "vendor" / "pyodide"
    log(f"pyodide {pins.PYODIDE_VERSION}: runtime -> {vendor}")
    tarball = ensure(pins.PYODIDE, force, log)
    pristine = unpack_runtime(tarball, vendor)
    jinja = ensure(pins.JINJA2, force, log)
    markupsafe_sdist = ensure(pins.MARKUPSAFE, force, log)
    wheels = [build_browser_wheel(vendor, log=log), build_markupsafe_wheel(markupsafe_sdist, vendor)]
    (vendor / jinja.name).write_bytes(jinja.read_bytes())
    wheels.append(vendor / jinja.name)
    lock = add_wheels(pristine, wheels, vendor / "pyodide-lock.json")
    entries = {k: lock["packages"][k] for k in (BROWSER_DIST, "jinja2", "markupsafe")}
    for w in wheels:
        log(f"  wheel {w.name}")
    ensure(pins.AXE_CORE, force, log)  # for the browser tests' accessibility check only: cached, not shipped
    dist = out / "dist"
    assets = build_dist(src, vendor, dist)
    log(f"assets: {len(assets)} hashed files -> {dist}")
    return BuildSummary(vendor, dist, wheels, entries, assets)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pybuild",
                                description="Fetch the pinned Pyodide runtime, build the browser wheels and "
                                            "lockfile, and write the hashed web app into web/dist.")
    p.add_argument("--force", action="store_true", help="download the pinned archives again even when cached")
    p.add_argument("--web", type=Path, default=REPO / "web", help="web app sources (default web/)")
    p.add_argument("--out", type=Path, default=None, help="where vendor/ and dist/ go (default: the --web folder)")
    args = p.parse_args(argv)
    try:
        s = build(args.web, args.out, args.force, log=print)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {getattr(e, 'filename', '') or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"built {len(s.wheels)} wheels, lockfile {s.vendor / 'pyodide-lock.json'}, app {s.dist}")
    return 0
