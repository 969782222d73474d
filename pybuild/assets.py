"""Hashed web assets: ``web/dist/``, a self-contained copy of the app ready for any static host.

Each file in ``HASHED`` is written as ``<stem>.<sha256[:12]><suffix>`` after the references it makes to files
hashed before it (``"./name.ext"`` in quotes) are rewritten, so a change anywhere changes the names up the chain and
browsers may cache them forever (server.py sends ``immutable`` for such names). ``STABLE`` files keep their names
(entry points: the page, the embedding module, the service worker) and are served ``no-cache``. ``sw.js`` gets the
list of files to precache between its ``/*@SHELL@*/`` markers, and ``gpu-replay.js`` the device table of
``modelfmt.device`` between its ``/*@DEVICE@*/`` markers (generated, never typed into the JS). ``asset-map.json`` maps
source names to hashed names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from modelfmt import device

from .fetch import BuildError

# leaves first: a file may only reference files listed before it
HASHED = ("gpu-replay.js", "cache.js", "errors.js", "markdown.js", "chatview.js", "store.js", "worker.js", "style.css",
          "engine.mjs", "ui.js", "settings.js", "chats.js", "models.js", "app.js")
STABLE = ("index.html", "engine.mjs", "sw.js")
SHELL_MARK = re.compile(r"/\*@SHELL@\*/.*?/\*@END@\*/", re.DOTALL)
DEVICE_MARK = re.compile(r"/\*@DEVICE@\*/.*?/\*@END@\*/", re.DOTALL)
DEVICE_FILE = "gpu-replay.js"


def device_table_js() -> str:
    """The device table as the JS literal between gpu-replay.js's markers."""
    return "/*@DEVICE@*/" + json.dumps(device.table(), separators=(",", ":")) + "/*@END@*/"


def with_device_table(text: str, where: Path) -> str:
    if not DEVICE_MARK.search(text):
        raise BuildError(f"{where}: no /*@DEVICE@*/ ... /*@END@*/ markers")
    return DEVICE_MARK.sub(lambda m: device_table_js(), text)


def _rewrite(text: str, mapping: dict[str, str]) -> str:
    for src, dst in mapping.items():
        text = re.sub(r"([\"'])\./" + re.escape(src) + r"\1", lambda m: f"{m.group(1)}./{dst}{m.group(1)}", text)
    return text


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build_dist(src: Path, vendor: Path, dist: Path) -> dict[str, str]:
    """Write ``dist`` from the app sources in ``src`` and the runtime in ``vendor``; return the asset map."""
    for name in set(HASHED) | set(STABLE):
        if not (src / name).is_file():
            raise BuildError(f"{src / name}: missing; the web app sources are incomplete")
    if not (vendor / "pyodide.asm.wasm").is_file():
        raise BuildError(f"{vendor}: no Pyodide runtime; run `python -m pybuild` without --assets-only")
    dist.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-dist-", dir=dist.parent))
    try:
        mapping: dict[str, str] = {}
        for name in HASHED:
            text = _rewrite((src / name).read_text(encoding="utf-8"), mapping)
            if name == DEVICE_FILE:
                text = with_device_table(text, src / name)
            data = text.encode("utf-8")
            stem, dot, suffix = name.rpartition(".")
            hashed = f"{stem}.{hashlib.sha256(data).hexdigest()[:12]}.{suffix}"
            (tmp / hashed).write_bytes(data)
            mapping[name] = hashed
        vend = tmp / "vendor" / "pyodide"
        vend.mkdir(parents=True)
        runtime = sorted(p.name for p in vendor.iterdir() if p.is_file() and not p.name.endswith(".orig.json"))
        for name in runtime:
            _link_or_copy(vendor / name, vend / name)
        shell = ["./", "./index.html", "./engine.mjs", "./asset-map.json"]
        shell += [f"./{mapping[n]}" for n in HASHED]
        shell += [f"./vendor/pyodide/{n}" for n in runtime]
        version = hashlib.sha256("\n".join(shell + list(mapping.values())).encode()).hexdigest()[:12]
        for name in STABLE:
            text = _rewrite((src / name).read_text(encoding="utf-8"), mapping)
            if name == "sw.js":
                if not SHELL_MARK.search(text):
                    raise BuildError(f"{src / name}: no /*@SHELL@*/ ... /*@END@*/ markers")
                text = SHELL_MARK.sub(lambda m: "/*@SHELL@*/" + json.dumps(
                    {"version": version, "files": shell}) + "/*@END@*/", text)
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / "asset-map.json").write_text(json.dumps(mapping, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if dist.exists():
            shutil.rmtree(dist)
        os.replace(tmp, dist)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return mapping
