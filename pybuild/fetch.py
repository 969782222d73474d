"""Pinned downloads for the build (Pyodide runtime, jinja2, markupsafe), cached in ``.cache/downloads/``.

The registry's own client fetches each archive (``npm pack``, ``pip download --no-deps``) into a temp folder; it
is moved into the cache only after its sha256 (and npm sha512 integrity) match the pin. A cached archive is
re-hashed on every build and fetched again when it no longer matches. No network when the cache is complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .pins import Pin

REPO = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20


class BuildError(Exception):
    """One clear line: what, where, what to do."""


# One cache and one way of hashing for every pinned download of the project (weights_tool.fetch).
from weights_tool.fetch import cache_root, pin_problem, sha256_file  # noqa: E402,F401


def problem(pin: Pin, path: Path) -> str | None:
    """None when ``path`` matches the pin, else what differs."""
    return pin_problem(path, pin.sha256, pin.integrity)


def _client(pin: Pin, dest: Path) -> list[str]:
    if pin.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(f"npm: not found, needed to fetch {pin.spec}; install nodejs/npm (apt-get install npm)")
        return [npm, "pack", pin.spec, "--pack-destination", str(dest), "--silent"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
           "--dest", str(dest)]
    cmd += ["--no-binary", ":all:"] if pin.sdist else ["--only-binary", ":all:"]
    return cmd + [pin.spec]


def ensure(pin: Pin, force: bool = False, log: Callable[[str], None] = lambda s: None) -> Path:
    """The verified archive of ``pin`` in the download cache (downloaded when missing, wrong or ``force``)."""
    downloads = cache_root() / "downloads"
    path = downloads / pin.archive
    if path.is_file() and not force:
        bad = problem(pin, path)
        if bad is None:
            return path
        log(f"  cached {bad}; fetching it again")
    downloads.mkdir(parents=True, exist_ok=True)
    log(f"  downloading {pin.spec} ({pin.registry}) ...")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-pybuild-", dir=downloads))
    try:
        cmd = _client(pin, tmp)
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{pin.spec}: download timed out; check the network and retry") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BuildError(f"{pin.spec}: `{' '.join(cmd[:3])} ...` failed: {last}; check the registry is reachable")
        got = tmp / pin.archive
        if not got.is_file():
            raise BuildError(f"{pin.spec}: the client wrote {sorted(p.name for p in tmp.iterdir())}, "
                             f"expected {pin.archive}; update pybuild/pins.py")
        bad = problem(pin, got)
        if bad is not None:
            raise BuildError(f"{pin.spec}: downloaded archive fails its pin ({bad}); nothing was kept")
        os.replace(got, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
