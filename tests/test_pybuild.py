"""pybuild: pinned runtime, wheel contents, lockfile entries, hashed assets, idempotent rebuilds.

The first run downloads the pinned archives (npm pyodide, PyPI jinja2 + markupsafe) into the cache; later runs use
the cache (re-hashed against the pins every time).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pybuild import pins  # noqa: E402
from pybuild.cli import build  # noqa: E402
from pybuild.fetch import cache_root, problem, sha256_file  # noqa: E402
from pybuild.wheels import BROWSER_DIST, NATIVE_ONLY, browser_files  # noqa: E402


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("pybuild")
    return build(REPO / "web", out), out


# ---- pins ----

def test_pins_verified_in_cache(built):
    for pin in pins.PINS:
        path = cache_root() / "downloads" / pin.archive
        assert path.is_file(), pin.spec
        assert problem(pin, path) is None
        assert sha256_file(path) == pin.sha256


def test_tampered_archive_detected(tmp_path):
    src = cache_root() / "downloads" / pins.PYODIDE.archive
    bad = tmp_path / pins.PYODIDE.archive
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert "sha256" in problem(pins.PYODIDE, bad)


def test_integrity_pin_is_npm_sha512():
    assert pins.PYODIDE.integrity.startswith("sha512-")
    assert len(base64.b64decode(pins.PYODIDE.integrity[7:])) == 64


# ---- runtime ----

def test_runtime_files(built):
    s, _ = built
    for name in pins.RUNTIME_FILES:
        assert (s.vendor / name).is_file(), name
    pkg = json.loads((s.vendor / "package.json").read_text())
    assert pkg["version"] == pins.PYODIDE_VERSION


# ---- wheels ----

def _wheel(s, prefix: str) -> Path:
    (w,) = [p for p in s.wheels if p.name.startswith(prefix)]
    return w


def test_browser_wheel_contents(built):
    s, _ = built
    w = _wheel(s, "llama3_webgpu_browser-")
    assert w.name.endswith("-py3-none-any.whl")
    names = set(zipfile.ZipFile(w).namelist())
    for must in ("driver/__init__.py", "driver/engine.py", "driver/gpu.py", "driver/backend_js.py",
                 "driver/loader.py", "modelfmt/config.py", "modelfmt/formats.py",
                 "shaders/__init__.py", "shaders/core.py"):
        assert must in names, must
    assert not any(n.startswith("driver/native/") for n in names) and "modelfmt/quantize.py" not in names
    wgsl = {p.name for p in (REPO / "shaders").glob("*.wgsl")}
    assert wgsl and {f"shaders/{n}" for n in wgsl} <= names
    assert not any(n.endswith((".pyc", ".so")) for n in names)


@pytest.mark.parametrize("prefix", ["llama3_webgpu_browser-", "markupsafe-", "jinja2-"])
def test_wheel_record_and_tag(built, prefix):
    s, _ = built
    z = zipfile.ZipFile(_wheel(s, prefix))
    (record,) = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
    (wheel,) = [n for n in z.namelist() if n.endswith(".dist-info/WHEEL")]
    assert "Tag: py3-none-any" in z.read(wheel).decode()
    rows = [r.split(",") for r in z.read(record).decode().splitlines() if r]
    listed = {r[0] for r in rows}
    assert listed == set(z.namelist())
    for arc, h, size in rows:
        if arc == record:
            continue
        data = z.read(arc)
        algo, digest = h.split("=", 1)
        assert algo == "sha256" and int(size) == len(data)
        assert digest == base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_markupsafe_is_pure_and_works(built, tmp_path):
    s, _ = built
    w = _wheel(s, "markupsafe-")
    names = zipfile.ZipFile(w).namelist()
    assert not any(n.endswith((".so", ".c", ".pyd")) for n in names)
    zipfile.ZipFile(w).extractall(tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import markupsafe; "
            "assert markupsafe.__file__.startswith(sys.argv[1]); "
            "print(markupsafe.escape('<a href=\"x\">&</a>'))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "&lt;a href=&#34;x&#34;&gt;&amp;&lt;/a&gt;"


def test_jinja2_is_the_pinned_file(built):
    s, _ = built
    assert sha256_file(_wheel(s, "jinja2-")) == pins.JINJA2.sha256


def test_browser_files_by_layout(tmp_path):
    """The wheel's files follow the folders: every .py / .wgsl / .json of the packages, minus NATIVE_ONLY."""
    for rel in ("modelfmt/__init__.py", "modelfmt/quantize.py", "modelfmt/formats.py", "driver/__init__.py",
                "driver/engine.py", "driver/native/__init__.py", "driver/native/cli.py", "shaders/__init__.py",
                "shaders/matvec.wgsl", "shaders/notes.txt", "driver/__pycache__/engine.cpython-312.pyc"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    got = set(browser_files(tmp_path))
    assert got == {"modelfmt/__init__.py", "modelfmt/formats.py", "driver/__init__.py", "driver/engine.py",
                   "shaders/__init__.py", "shaders/matvec.wgsl"}
    assert not any(f.startswith(NATIVE_ONLY) for f in browser_files())


def test_device_table_is_generated_into_the_page(built):
    """gpu-replay.js reads modelfmt.device's table: pybuild writes it into the built copy, and the source copy (used when
    web/ itself is served) is the same text."""
    from modelfmt import device
    from pybuild.assets import DEVICE_MARK, device_table_js
    s, _ = built
    mapping = json.loads((s.dist / "asset-map.json").read_text())
    built_js = (s.dist / mapping["gpu-replay.js"]).read_text()
    want = device_table_js()
    assert DEVICE_MARK.search(built_js).group(0) == want
    assert json.loads(want[len("/*@DEVICE@*/"):-len("/*@END@*/")]) == device.table()
    assert DEVICE_MARK.search((REPO / "web" / "gpu-replay.js").read_text()).group(0) == want, \
        "web/gpu-replay.js: paste pybuild.assets.device_table_js() between its markers"


# ---- lockfile ----

def test_lockfile_entries(built):
    s, _ = built
    lock = json.loads((s.vendor / "pyodide-lock.json").read_text())
    orig = json.loads((s.vendor / "pyodide-lock.orig.json").read_text())
    assert lock["info"] == orig["info"]
    pk = lock["packages"]
    for key in (BROWSER_DIST, "jinja2", "markupsafe"):
        e = pk[key]
        f = s.vendor / e["file_name"]
        assert f.is_file() and "/" not in e["file_name"], key
        assert e["sha256"] == sha256_file(f), key
    assert pk[BROWSER_DIST]["depends"] == ["jinja2"]
    assert set(pk[BROWSER_DIST]["imports"]) == {"modelfmt", "driver", "shaders"}
    assert pk["jinja2"]["depends"] == ["markupsafe"]
    assert pk["markupsafe"]["file_name"].endswith("-py3-none-any.whl")
    # every other package of the pristine lock is untouched
    for k, v in orig["packages"].items():
        if k not in ("jinja2", "markupsafe"):
            assert pk[k] == v, k


# ---- hashed assets ----

def test_dist_hashed_names_and_references(built):
    s, _ = built
    amap = json.loads((s.dist / "asset-map.json").read_text())
    assert set(amap) == {"gpu-replay.js", "cache.js", "errors.js", "markdown.js", "chatview.js", "store.js", "worker.js",
                         "style.css", "engine.mjs", "ui.js", "settings.js", "chats.js", "models.js", "app.js"}
    for src, hashed in amap.items():
        data = (s.dist / hashed).read_bytes()
        assert hashed.split(".")[-2] == hashlib.sha256(data).hexdigest()[:12]
        assert re.fullmatch(r"[a-z-]+\.[0-9a-f]{12}\.(js|mjs|css)", hashed)
    index = (s.dist / "index.html").read_text()
    assert f"./{amap['app.js']}" in index and f"./{amap['style.css']}" in index
    assert "./app.js" not in index
    worker = (s.dist / amap["worker.js"]).read_text()
    assert f"./{amap['gpu-replay.js']}" in worker and f"./{amap['cache.js']}" in worker
    assert f"./{amap['errors.js']}" in worker
    # every page module names its imports by their hashed names (no "./x.js" left to miss in the dist)
    page = {"ui.js": ("errors.js", "engine.mjs", "store.js"), "settings.js": ("errors.js", "ui.js"),
            "chats.js": ("chatview.js", "store.js", "ui.js", "settings.js"),
            "models.js": ("engine.mjs", "store.js", "ui.js", "chats.js"),
            "app.js": ("engine.mjs", "errors.js", "store.js", "ui.js", "settings.js", "chats.js", "models.js")}
    for mod, deps in page.items():
        text = (s.dist / amap[mod]).read_text()
        for dep in deps:
            assert f"./{amap[dep]}" in text, (mod, dep)
        for name in amap:
            assert f"'./{name}'" not in text, (mod, name)
    engine = (s.dist / "engine.mjs").read_text()
    assert f"./{amap['worker.js']}" in engine
    sw = (s.dist / "sw.js").read_text()
    shell = json.loads(re.search(r"/\*@SHELL@\*/(.*?)/\*@END@\*/", sw, re.S).group(1))
    for f in shell["files"]:
        if f != "./":
            assert (s.dist / f).is_file(), f
    assert "./vendor/pyodide/pyodide.asm.wasm" in shell["files"]
    assert (s.dist / "vendor" / "pyodide" / "pyodide-lock.json").read_bytes() == \
        (s.vendor / "pyodide-lock.json").read_bytes()


def test_no_external_urls_in_app(built):
    """The app never names another origin (no CDN, no fonts)."""
    s, _ = built
    for p in s.dist.glob("*.*"):
        if p.suffix in (".js", ".mjs", ".css", ".html"):
            assert not re.search(r"https?://", p.read_text()), p.name


def test_every_web_source_is_built_and_in_the_dev_shell():
    """A new page module cannot be forgotten: every script and stylesheet in web/ is in pybuild's HASHED or STABLE
    lists (else the dist lacks it) and in web/sw.js's development shell list (else it is not there offline)."""
    from pybuild.assets import HASHED, STABLE
    sources = {p.name for p in (REPO / "web").iterdir() if p.suffix in (".js", ".mjs", ".css")}
    assert sources - set(HASHED) - set(STABLE) == set()
    sw = (REPO / "web" / "sw.js").read_text()
    dev = json.loads(re.search(r"/\*@SHELL@\*/(.*?)/\*@END@\*/", sw, re.S).group(1))["files"]
    assert {f"./{n}" for n in sources - {"sw.js"}} - set(dev) == set()


# ---- idempotence ----

def test_rebuild_is_byte_identical(built):
    s, out = built
    before = tree_hashes(out)
    build(REPO / "web", out)
    assert tree_hashes(out) == before


# ---- CLI ----

def test_cli_bad_web_dir(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pybuild", "--web", str(tmp_path / "nope"), "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
