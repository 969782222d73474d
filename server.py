"""Local Flask server for the web app (``web/dist`` or ``web/``) and the packed models (``models/``).

    python server.py [--host 127.0.0.1] [--port 8000] [--models DIR] [--web DIR]

What it does, and why (docs/DEPLOY.md says how to reproduce it on any static host):
- ``/`` serves the web app. ``--web`` defaults to ``web/dist`` when ``python -m pybuild`` has built it (hashed assets
  plus the Pyodide runtime), else ``web/`` itself (development; the page then needs ``web/vendor`` from pybuild).
- ``/models/<name>/<file>`` serves packed models; ``/api/models`` lists every folder holding a valid manifest
  (``models``), and under ``broken`` the folders whose manifest.json is there but unusable, with why.
- Files are streamed in 256 KiB chunks (never read whole), with single Range requests (206, 416 when unsatisfiable;
  a multi-range request gets the whole file with 200, which RFC 9110 allows), HEAD, strong ETags and
  If-None-Match (304) / If-Range.
- Content-addressed files (``shard-NNN-<12 hex>.bin``, ``<name>.<12 hex>.<ext>`` assets) are ``immutable`` for a
  year; everything else (app shell, manifest, Pyodide runtime) is ``no-cache`` (always revalidated by ETag).
- COOP ``same-origin`` and COEP ``require-corp`` on every response: the page is cross-origin isolated, which
  SharedArrayBuffer and precise timers need.
- Only regular files under the two roots are reachable: any ``..``/``.`` segment, dot-file, percent-encoded
  ``.``, ``/``, ``\\`` or NUL, backslash, absolute or drive path, or a symlink resolving outside its root is a 404.
- Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from flask import Flask, Response, jsonify, request

from modelfmt import manifest

REPO = Path(__file__).resolve().parent
CHUNK = 256 * 1024

MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".wgsl": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
CHECK_FILES = ("cases.json", "cases.bin")   # what --check-cases serves under /check/ (shaders/case_export.py)
CHECK_MAX_BYTES = 8 << 20                    # a --full check report: a few thousand rows
# content-addressed names: the bytes can never change under them
HASHED = re.compile(r"^(shard-\d{3}-[0-9a-f]{12}\.bin|[A-Za-z0-9_-]+\.[0-9a-f]{12}\.[a-z0-9]+)$")
# raw-URI escapes that could smuggle a separator, a dot segment or a NUL past the router
BAD_ESCAPE = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


# ---- path safety ----

def safe_file(root: Path, rel: str) -> Path | None:
    """The regular file ``root/rel`` if ``rel`` is a plain relative path that stays inside ``root``, else None."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/") or ":" in rel.split("/")[0]:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    try:
        real_root = root.resolve(strict=True)
        target = (real_root / Path(*parts)).resolve(strict=True)  # follows symlinks
    except (OSError, RuntimeError, ValueError):
        return None
    if real_root != target and real_root not in target.parents:
        return None  # a symlink that points out of the root
    return target if target.is_file() else None


def raw_path_ok() -> bool:
    """False when the undecoded request path hides a separator, dot, backslash or NUL in a %-escape."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    return BAD_ESCAPE.search(raw.split("?", 1)[0]) is None


# ---- responses ----

def etag_of(path: Path, st: os.stat_result) -> str:
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()
    return '"' + hashlib.sha256(key).hexdigest()[:24] + '"'


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One byte range from a Range header: (start, end inclusive), "416" if unsatisfiable, None to send all."""
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs:
        return None  # unknown unit or bad syntax: ignore the header (RFC 9110 14.2)
    if "," in specs:
        return None  # multiple ranges: we answer with the whole file (200), documented in DEPLOY.md
    m = RANGE_SPEC.match(specs)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "416"
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid range-spec: ignored
    if start >= size:
        return "416"
    return start, min(end, size - 1)


def stream(path: Path, start: int, length: int):
    """Yield ``length`` bytes of ``path`` from ``start`` in CHUNK pieces."""
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                break
            left -= len(block)
            yield block


def not_found() -> Response:
    return Response("not found\n", status=404, mimetype="text/plain")


def send_file_safely(path: Path) -> Response:
    """The file at ``path`` (already checked to be inside a root) with Range/ETag/caching rules applied."""
    st = path.stat()
    size = st.st_size
    etag = etag_of(path, st)
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    cache = IMMUTABLE if HASHED.match(path.name) else NO_CACHE
    base = {"ETag": etag, "Cache-Control": cache, "Accept-Ranges": "bytes"}

    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        if "*" in tags or etag in tags or ("W/" + etag) in tags:
            return Response(status=304, headers=base)

    rng = None
    if request.headers.get("Range"):
        if_range = request.headers.get("If-Range")
        if if_range is None or if_range.strip() == etag:
            rng = parse_range(request.headers["Range"], size)
    if rng == "416":
        return Response(status=416, headers={**base, "Content-Range": f"bytes */{size}"})

    if rng is None:
        status, start, length = 200, 0, size
        headers = dict(base)
    else:
        start, end = rng
        status, length = 206, end - start + 1
        headers = {**base, "Content-Range": f"bytes {start}-{end}/{size}"}
    headers["Content-Length"] = str(length)
    body = [] if request.method == "HEAD" else stream(path, start, length)
    resp = Response(body, status=status, headers=headers, content_type=mime, direct_passthrough=True)
    return resp


# ---- model list ----

def manifest_problem(folder: Path) -> tuple[dict | None, str | None]:
    """(manifest, None) when the folder's manifest is one of this format and version (``modelfmt.manifest``) whose
    shards are all present with their sizes, else (None, why in words). Listing stays cheap: the page verifies every
    shard's sha256 itself."""
    path = safe_file(folder, "manifest.json")
    if path is None:
        return None, "no manifest.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "manifest.json is not valid JSON"
    bad = manifest.header_problem(m)
    if bad is not None:
        return None, bad
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards:
        return None, "manifest.json lists no shards"
    for s in shards:
        if not isinstance(s, dict) or not isinstance(s.get("file"), str) or not isinstance(s.get("nbytes"), int):
            return None, "manifest.json has a malformed shard entry"
        f = safe_file(folder, s["file"])
        if f is None:
            return None, f"{s['file']} is missing"
        if f.stat().st_size != s["nbytes"]:
            return None, f"{s['file']} has {f.stat().st_size} bytes, the manifest says {s['nbytes']}"
    return m, None


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest if it is usable (see manifest_problem), else None."""
    return manifest_problem(folder)[0]


def list_models(models_dir: Path, broken: list | None = None) -> list[dict]:
    """Loadable models; folders that hold a manifest.json but cannot be loaded go to ``broken`` as {name, broken}
    (why, in words), so that the page can list them instead of leaving them out silently."""
    out = []
    if not models_dir.is_dir():
        return out
    for folder in sorted(models_dir.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        m, why = manifest_problem(folder)
        if m is None:
            if broken is not None and (folder / "manifest.json").is_file():
                broken.append({"name": folder.name, "broken": why})
            continue
        cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
        quant = m.get("quant") if isinstance(m.get("quant"), dict) else {}
        out.append({
            "name": folder.name,
            "display_name": m.get("name", folder.name),
            "bytes": sum(s["nbytes"] for s in m["shards"]),
            "shards": len(m["shards"]),
            "quant": quant.get("scheme"),
            "requirements": m.get("requirements", {}),
            "layers": cfg.get("num_hidden_layers"),
            "hidden_size": cfg.get("hidden_size"),
            "vocab_size": cfg.get("vocab_size"),
            "manifest": f"/models/{folder.name}/manifest.json",
        })
    return out


# ---- app ----

def default_web_dir() -> Path:
    dist = REPO / "web" / "dist"
    return dist if (dist / "index.html").is_file() else REPO / "web"


def create_app(web_dir: Path | None = None, models_dir: Path | None = None, bench_file: Path | None = None,
               check_dir: Path | None = None, check_file: Path | None = None) -> Flask:
    web_root = Path(web_dir) if web_dir else default_web_dir()
    models_root = Path(models_dir) if models_dir else REPO / "models"
    app = Flask(__name__, static_folder=None)
    app.url_map.merge_slashes = False  # never redirect '//' paths: they are simply not found
    app.config["WEB_DIR"], app.config["MODELS_DIR"] = web_root, models_root

    @app.after_request
    def _isolation(resp: Response) -> Response:
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        resp.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
        resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    @app.errorhandler(404)
    @app.errorhandler(405)
    def _missing(_e):
        return not_found()

    @app.get("/api/models")
    def api_models():
        broken: list[dict] = []
        resp = jsonify({"models": list_models(models_root, broken), "broken": broken})
        resp.headers["Cache-Control"] = NO_CACHE
        return resp

    bench_out = bench_file

    def _report(max_bytes: int):
        """The POSTed JSON object of a bench / check report, or None (not an object, no length, too big)."""
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or request.content_length is None or request.content_length > max_bytes:
            return None
        return data

    def _append_line(path, data: dict) -> str:
        line = json.dumps(data, sort_keys=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return line

    if bench_out is not None:
        @app.post("/api/bench")
        def api_bench():
            """The page's bench mode (``/?bench=MODEL``) posts its figures here (one JSON line appended)."""
            data = _report(65536)
            if data is None:
                return Response("bad bench report\n", status=400, mimetype="text/plain")
            print(f"bench: {_append_line(bench_out, data)}", flush=True)
            return jsonify({"ok": True})

    if check_dir is not None:
        @app.get("/check/<name>")
        def check_cases(name: str):
            """The kernel check's cases (``python -m shaders export-cases DIR``) for the page's /?check=1."""
            if name not in CHECK_FILES:
                return not_found()
            path = safe_file(Path(check_dir), name)
            if path is None:
                return not_found()
            return send_file_safely(path)   # no-cache: a new export is never met by a cached old half

    if check_file is not None:
        @app.post("/api/check")
        def api_check():
            """The page's check mode posts its rows here (one JSON line appended)."""
            data = _report(CHECK_MAX_BYTES)
            if data is None:
                return Response("bad check report\n", status=400, mimetype="text/plain")
            _append_line(check_file, data)
            print(f"check: {data.get('passed')}/{data.get('total')} passed", flush=True)
            return jsonify({"ok": True})

    @app.get("/", defaults={"rel": ""})
    @app.get("/<path:rel>")
    def files(rel: str):
        if not raw_path_ok():
            return not_found()
        # the router decodes %xx; check the decoded path the same way whatever the prefix
        if rel.startswith("models/"):
            path = safe_file(models_root, rel[len("models/"):])
        else:
            path = safe_file(web_root, rel or "index.html")
        return not_found() if path is None else send_file_safely(path)

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python server.py", description="Serve the web app and the packed models.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--models", type=Path, default=REPO / "models", help="folder of packed models (default models/)")
    p.add_argument("--web", type=Path, default=None,
                   help="web root (default web/dist when built by `python -m pybuild`, else web/)")
    p.add_argument("--bench-out", type=Path, default=None,
                   help="accept the page's bench reports (POST /api/bench) and append them to this JSON-lines file")
    p.add_argument("--check-cases", type=Path, default=None, metavar="DIR",
                   help="serve DIR/cases.json + cases.bin (python -m shaders export-cases DIR) at /check/ for the "
                        "page's kernel check, /?check=1")
    p.add_argument("--check-out", type=Path, default=None, metavar="FILE",
                   help="accept the page's kernel-check reports (POST /api/check), appended to this JSON-lines file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    web = args.web or default_web_dir()
    if not (web / "index.html").is_file():
        print(f"error: {web}: no index.html; pass --web DIR or run `python -m pybuild`", file=sys.stderr)
        return 2
    if not args.models.is_dir():
        print(f"warning: {args.models}: not a folder; no models will be listed "
              "(pack one with `python -m weights_tool pack`)", file=sys.stderr)
    if not (1 <= args.port <= 65535):
        print(f"error: --port {args.port}: must be 1..65535", file=sys.stderr)
        return 2
    if args.check_cases is not None and not (args.check_cases / "cases.json").is_file():
        print(f"error: --check-cases {args.check_cases}: no cases.json; run `python -m shaders export-cases "
              f"{args.check_cases}` first", file=sys.stderr)
        return 2
    app = create_app(web, args.models, args.bench_out, args.check_cases, args.check_out)
    print(f"serving {web} and {args.models} on http://{args.host}:{args.port}/", flush=True)
    try:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
