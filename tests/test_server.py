"""server.py through Flask's test client: MIME types, Range/HEAD/ETag, caching headers, COOP/COEP, model list,
and every path-traversal trick we know of (encoded dots and slashes, backslashes, NUL, absolute paths, symlinks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import hashlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import server  # noqa: E402

SHARD = "shard-000-0123456789ab.bin"
SHARD_BYTES = bytes(range(256)) * 40  # 10240 bytes with a recognisable pattern


def manifest(shard_nbytes: int = len(SHARD_BYTES), **over) -> dict:
    m = {"format": "llama3-webgpu", "format_version": 1, "name": "tiny",
         "config": {"num_hidden_layers": 2, "hidden_size": 64, "vocab_size": 256},
         "quant": {"scheme": "q4_0", "group_size": 32},
         "tensors": {},
         "shards": [{"file": SHARD, "nbytes": shard_nbytes, "sha256": hashlib.sha256(SHARD_BYTES).hexdigest()}],
         "requirements": {"max_storage_buffer_binding_size": 4096, "max_buffer_size": 4096, "features": []}}
    m.update(over)
    return m


@pytest.fixture()
def roots(tmp_path: Path):
    web = tmp_path / "web"
    models = tmp_path / "models"
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>t</title>")
    (web / "app.js").write_text("console.log(1)")
    (web / "engine.mjs").write_text("export {}")
    (web / "assets" / "app.0123456789ab.js").write_text("console.log(2)")
    (web / "kernel.wgsl").write_text("@compute fn main() {}")
    (web / "pyodide.asm.wasm").write_bytes(b"\0asm\1\0\0\0")
    (web / "pkg-1.0-py3-none-any.whl").write_bytes(b"PK\3\4")
    (web / "data.json").write_text("{}")
    (web / ".secret").write_text("hidden")
    (web / "empty.bin").write_bytes(b"")
    tiny = models / "tiny"
    tiny.mkdir(parents=True)
    (tiny / SHARD).write_bytes(SHARD_BYTES)
    (tiny / "manifest.json").write_text(json.dumps(manifest()))
    (tiny / "tokenizer.json").write_text("{}")
    # folders that must not be listed
    (models / "nomanifest").mkdir()
    (models / "badjson").mkdir()
    (models / "badjson" / "manifest.json").write_text("{not json")
    (models / "wrongformat").mkdir()
    (models / "wrongformat" / "manifest.json").write_text(json.dumps(manifest(format="other")))
    (models / "missingshard").mkdir()
    (models / "missingshard" / "manifest.json").write_text(json.dumps(manifest()))
    # a secret outside both roots, and symlinks pointing at it
    outside = tmp_path / "outside.txt"
    outside.write_text("TOP SECRET")
    os.symlink(outside, web / "escape.txt")
    os.symlink(tmp_path, web / "up")
    os.symlink(outside, tiny / "escape.bin")
    os.symlink(web / "app.js", web / "inside-link.js")  # a symlink that stays inside is fine
    return web, models, outside


@pytest.fixture()
def client(roots):
    web, models, _ = roots
    return server.create_app(web, models).test_client()


# ---- MIME types and headers ----

@pytest.mark.parametrize("path,mime", [
    ("/", "text/html"), ("/index.html", "text/html"), ("/app.js", "text/javascript"),
    ("/engine.mjs", "text/javascript"), ("/pyodide.asm.wasm", "application/wasm"), ("/data.json", "application/json"),
    ("/models/tiny/" + SHARD, "application/octet-stream"), ("/pkg-1.0-py3-none-any.whl", "application/zip"),
    ("/kernel.wgsl", "text/plain"), ("/api/models", "application/json"),
])
def test_mime_types(client, path, mime):
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == mime


@pytest.mark.parametrize("path", ["/", "/app.js", "/models/tiny/" + SHARD, "/api/models", "/nope", "/../x"])
def test_isolation_headers_everywhere(client, path):
    r = client.get(path)
    assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"


def test_cache_control(client):
    assert client.get("/models/tiny/" + SHARD).headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert client.get("/assets/app.0123456789ab.js").headers["Cache-Control"] == "public, max-age=31536000, immutable"
    for p in ("/", "/index.html", "/app.js", "/models/tiny/manifest.json", "/models/tiny/tokenizer.json",
              "/api/models"):
        assert client.get(p).headers["Cache-Control"] == "no-cache", p


def test_full_body_and_length(client):
    r = client.get("/models/tiny/" + SHARD)
    assert r.data == SHARD_BYTES
    assert r.headers["Content-Length"] == str(len(SHARD_BYTES))
    assert r.headers["Accept-Ranges"] == "bytes"


def test_head_has_headers_no_body(client):
    r = client.head("/models/tiny/" + SHARD)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(SHARD_BYTES))
    assert r.data == b""
    assert r.headers["ETag"] == client.get("/models/tiny/" + SHARD).headers["ETag"]
    r = client.head("/models/tiny/" + SHARD, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["Content-Length"] == "10" and r.data == b""


# ---- ETag ----

def test_etag_304(client, roots):
    r = client.get("/app.js")
    tag = r.headers["ETag"]
    assert tag.startswith('"') and tag.endswith('"')
    r2 = client.get("/app.js", headers={"If-None-Match": tag})
    assert r2.status_code == 304 and r2.data == b""
    assert r2.headers["ETag"] == tag
    assert client.get("/app.js", headers={"If-None-Match": '"other", ' + tag}).status_code == 304
    assert client.get("/app.js", headers={"If-None-Match": "*"}).status_code == 304
    assert client.get("/app.js", headers={"If-None-Match": '"other"'}).status_code == 200
    # a changed file gets a new tag
    web = roots[0]
    (web / "app.js").write_text("console.log('changed!')")
    os.utime(web / "app.js", ns=(1, 10**18))
    r3 = client.get("/app.js", headers={"If-None-Match": tag})
    assert r3.status_code == 200 and r3.headers["ETag"] != tag


# ---- Range ----

N = len(SHARD_BYTES)


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-0", 0, 0), ("bytes=0-99", 0, 99), ("bytes=100-", 100, N - 1), ("bytes=-10", N - 10, N - 1),
    ("bytes=5000-99999999", 5000, N - 1), ("bytes=-999999", 0, N - 1), (f"bytes={N - 1}-{N - 1}", N - 1, N - 1),
    ("bytes = 10 - 20", 10, 20),
])
def test_range_206(client, header, start, end):
    r = client.get("/models/tiny/" + SHARD, headers={"Range": header})
    assert r.status_code == 206, header
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{N}"
    assert r.headers["Content-Length"] == str(end - start + 1)
    assert r.data == SHARD_BYTES[start:end + 1]


@pytest.mark.parametrize("header", [f"bytes={N}-", f"bytes={N + 5}-{N + 10}", "bytes=-0"])
def test_range_416(client, header):
    r = client.get("/models/tiny/" + SHARD, headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{N}"
    assert r.data == b""


def test_range_on_empty_file_416(client):
    r = client.get("/empty.bin", headers={"Range": "bytes=0-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=9-3", "bytes=-", "garbage"])
def test_range_ignored_gives_full_200(client, header):
    """Multiple ranges, unknown units and malformed specs: the whole file with 200 (documented in DEPLOY.md)."""
    r = client.get("/models/tiny/" + SHARD, headers={"Range": header})
    assert r.status_code == 200, header
    assert r.data == SHARD_BYTES
    assert "Content-Range" not in r.headers


def test_if_range(client):
    tag = client.get("/models/tiny/" + SHARD).headers["ETag"]
    r = client.get("/models/tiny/" + SHARD, headers={"Range": "bytes=0-9", "If-Range": tag})
    assert r.status_code == 206 and r.data == SHARD_BYTES[:10]
    r = client.get("/models/tiny/" + SHARD, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.data == SHARD_BYTES


def test_streamed_not_read_whole(client, monkeypatch):
    """The body is a generator of CHUNK-sized pieces, not one bytes object."""
    monkeypatch.setattr(server, "CHUNK", 1000)
    r = client.get("/models/tiny/" + SHARD, buffered=False)
    pieces = list(r.response)
    assert len(pieces) == 11 and max(len(p) for p in pieces) == 1000
    assert b"".join(pieces) == SHARD_BYTES
    r.close()


# ---- model list ----

def test_api_models_lists_only_valid(client):
    data = client.get("/api/models").get_json()
    assert [m["name"] for m in data["models"]] == ["tiny"]
    m = data["models"][0]
    assert m["bytes"] == N and m["quant"] == "q4_0" and m["shards"] == 1
    assert m["requirements"]["max_storage_buffer_binding_size"] == 4096
    assert m["manifest"] == "/models/tiny/manifest.json"


FIXTURE_BROKEN = [{"name": "badjson", "broken": "manifest.json is not valid JSON"},
                  {"name": "missingshard", "broken": f"{SHARD} is missing"},
                  {"name": "wrongformat",
                   "broken": "manifest: format 'other' version 1, expected 'llama3-webgpu' version 1"}]


def test_api_models_lists_broken_with_why(client):
    """A folder whose manifest is there but unusable (a shard gone, bad JSON, another format) is listed under
    ``broken`` with why instead of silently left out; a folder without a manifest (not a model) is not listed."""
    assert client.get("/api/models").get_json()["broken"] == FIXTURE_BROKEN


def test_api_models_size_mismatch_listed_as_broken(roots):
    web, models, _ = roots
    (models / "tiny" / "manifest.json").write_text(json.dumps(manifest(shard_nbytes=N + 1)))
    data = server.create_app(web, models).test_client().get("/api/models").get_json()
    assert data["models"] == []
    assert {"name": "tiny", "broken": f"{SHARD} has {N} bytes, the manifest says {N + 1}"} in data["broken"]


def test_api_models_missing_dir(tmp_path, roots):
    web = roots[0]
    c = server.create_app(web, tmp_path / "none").test_client()
    assert c.get("/api/models").get_json() == {"models": [], "broken": []}


# ---- traversal ----

@pytest.mark.parametrize("path", [
    "/../outside.txt", "/models/../outside.txt", "/models/tiny/../../outside.txt",
    "/%2e%2e/outside.txt", "/%2E%2E/outside.txt", "/models/%2e%2e/%2e%2e/outside.txt", "/.%2e/outside.txt",
    "/models/tiny%2f..%2f..%2foutside.txt", "/..%2foutside.txt", "/%2foutside.txt", "/models%2ftiny%2fmanifest.json",
    "/..%5coutside.txt", "/models\\..\\..\\outside.txt", "/..\\outside.txt",
    "/app.js%00.txt", "/app.js\x00", "//etc/passwd", "/%2Fetc/passwd", "/etc/passwd",
    "/models//etc/passwd", "/models/C:/Windows/win.ini", "/C:%5cWindows",
    "/escape.txt", "/up/outside.txt", "/models/tiny/escape.bin", "/.secret", "/models/.hidden",
    "/./app.js", "/models/tiny/./manifest.json", "/assets", "/models/tiny", "/models/", "/models",
    "/%252e%252e/outside.txt",
])
def test_traversal_404(client, path):
    r = client.get(path)
    assert r.status_code == 404, path
    assert b"TOP SECRET" not in r.data


def test_symlink_inside_root_served(client):
    r = client.get("/inside-link.js")
    assert r.status_code == 200 and r.data == b"console.log(1)"


def test_other_methods_404(client):
    assert client.post("/app.js").status_code in (404, 405)
    assert client.delete("/models/tiny/" + SHARD).status_code in (404, 405)


# ---- CLI ----

def test_cli_bad_web_dir_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "server.py"), "--web", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no index.html" in r.stderr and "Traceback" not in r.stderr


def test_default_bind_is_localhost():
    args = server.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.port == 8000


# ---- bench reports ----

def test_bench_endpoint_off_by_default(client):
    assert client.post("/api/bench", json={"decode_tokens_per_s": 1.0}).status_code == 404


def test_bench_endpoint_appends(roots, tmp_path):
    web, models, _ = roots
    out = tmp_path / "bench.jsonl"
    c = server.create_app(web, models, out).test_client()
    assert c.post("/api/bench", json={"a": 1}).status_code == 200
    assert c.post("/api/bench", json={"b": 2}).status_code == 200
    assert c.post("/api/bench", data="not json", content_type="application/json").status_code == 400
    assert c.post("/api/bench", json=[1, 2]).status_code == 400
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"a": 1}, {"b": 2}]
    r = c.post("/api/bench", json={"a": 1})
    assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"


# ---- the page's kernel check (/?check=1): the exported cases and the reports ----

def test_check_endpoints_off_by_default(client):
    assert client.get("/check/cases.json").status_code == 404
    assert client.post("/api/check", json={"rows": []}).status_code == 404


def test_check_cases_served_and_reports_appended(roots, tmp_path):
    web, models, _ = roots
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "cases.json").write_text('{"version": 1}')
    (cases / "cases.bin").write_bytes(b"\x01\x02\x03\x04")
    (cases / "other.txt").write_text("not served")
    out = tmp_path / "check.jsonl"
    c = server.create_app(web, models, None, cases, out).test_client()
    r = c.get("/check/cases.json")
    assert r.status_code == 200 and r.json == {"version": 1} and r.headers["Cache-Control"] == "no-cache"
    r = c.get("/check/cases.bin")
    assert r.data == b"\x01\x02\x03\x04" and r.headers["Content-Type"] == "application/octet-stream"
    assert c.get("/check/other.txt").status_code == 404
    assert c.get("/check/..%2fcheck.jsonl").status_code == 404
    assert c.post("/api/check", json={"passed": 1, "total": 1, "rows": [{"ok": True}]}).status_code == 200
    assert c.post("/api/check", json=[1]).status_code == 400
    assert c.post("/api/bench", json={"a": 1}).status_code == 404   # --bench-out not given
    assert [json.loads(x)["total"] for x in out.read_text().splitlines()] == [1]


def test_check_cases_dir_without_export_is_refused(tmp_path, capsys):
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html>")
    assert server.main(["--web", str(web), "--check-cases", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "python -m shaders export-cases" in err
