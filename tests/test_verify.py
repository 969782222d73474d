"""weights_tool verify: a sound model passes; a flipped byte in any shard and every kind of
tampered tensor table is caught and named (API and CLI exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _checkpoints import write_hf

from weights_tool.pack import pack
from weights_tool.verify import verify

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    src = write_hf(d / "src", tie_word_embeddings=True)
    # tiny shards so that there are several to corrupt
    pack(src, d / "good", quant="q4_1", shard_mb=8 / 1024, progress=False)
    return d / "good"


def _copy(packed: Path, tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "m"
    out.mkdir()
    for f in packed.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out, json.loads((out / "manifest.json").read_text())


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "weights_tool", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_sound_model_passes(packed):
    assert verify(packed) == []
    r = _cli("verify", packed)
    m = json.loads((packed / "manifest.json").read_text())
    assert r.returncode == 0, r.stderr
    want = f"OK: {len(m['shards'])} shards, {len(m['tensors'])} tensors verified"
    assert r.stdout.strip() == want


def test_flipped_byte_in_every_shard(packed, tmp_path):
    out, m = _copy(packed, tmp_path)
    assert len(m["shards"]) >= 3
    for s in m["shards"]:
        path = out / s["file"]
        data = bytearray(path.read_bytes())
        pos = len(data) // 2
        data[pos] ^= 0x10
        path.write_bytes(data)
        problems = verify(out)
        assert problems == [f"shard {s['file']}: sha256 mismatch (corrupt file)"]
        data[pos] ^= 0x10
        path.write_bytes(data)
    assert verify(out) == []
    first = out / m["shards"][0]["file"]
    data = bytearray(first.read_bytes())
    data[0] ^= 1
    first.write_bytes(data)
    r = _cli("verify", out)
    assert r.returncode == 1 and m["shards"][0]["file"] in r.stderr and "Traceback" not in r.stderr


def _first_block(m, name):
    return m["tensors"][name]["blocks"][0]


TAMPER = {
    "misaligned": (lambda m: _first_block(m, "norm")["parts"]["data"].update(
        offset=_first_block(m, "norm")["parts"]["data"]["offset"] + 4), "'norm'", "aligned"),
    "wrong nbytes": (lambda m: _first_block(m, "layers.0.attention.wq")["parts"]["qs"].update(
        nbytes=256), "'layers.0.attention.wq'", "its shape needs"),
    "overlap": (lambda m: _first_block(m, "layers.0.attention.wk")["parts"]["qs"].update(
        _first_block(m, "layers.0.attention.wq")["parts"]["qs"]), "overlaps",
        "layers.0.attention.w"),
    "outside shard": (lambda m: _first_block(m, "norm")["parts"]["data"].update(
        offset=1 << 20), "'norm'", "outside shard"),
    "missing shard index": (lambda m: _first_block(m, "norm")["parts"]["data"].update(shard=99),
                            "'norm'", "does not exist"),
    "rows not covered": (lambda m: _first_block(m, "tok_embeddings").update(rows=128),
                         "'tok_embeddings'", "rows"),
    "shape vs config": (lambda m: m["tensors"]["layers.1.ffn_norm"].update(shape=[32]),
                        "'layers.1.ffn_norm'", "config implies"),
    "bad alias": (lambda m: m["tensors"]["output"].update(alias="embeddings"), "'output'", "alias"),
    "missing tensor": (lambda m: m["tensors"].pop("layers.1.attention.wv"),
                       "'layers.1.attention.wv'", "missing"),
    "unknown tensor": (lambda m: m["tensors"].update(extra=m["tensors"]["norm"]), "'extra'",
                       "not a tensor of this model"),
    "missing part": (lambda m: _first_block(m, "layers.0.feed_forward.w1")["parts"].pop("mins"),
                     "'layers.0.feed_forward.w1'", "needs"),
    "config": (lambda m: m["config"].update(num_hidden_layers=3), "'layers.2.attention.wq'",
               "missing"),
    "malformed entry": (lambda m: m["tensors"]["norm"].pop("blocks"), "'norm'", "malformed"),
    "requirements": (lambda m: m["requirements"].update(max_storage_buffer_binding_size=16),
                     "requirements", "largest part"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_table(packed, tmp_path, case):
    out, m = _copy(packed, tmp_path)
    edit, name, words = TAMPER[case]
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    problems = verify(out)
    assert any(name in p and words in p for p in problems), problems


def test_missing_manifest_and_shard(packed, tmp_path):
    out, m = _copy(packed, tmp_path)
    (out / m["shards"][1]["file"]).unlink()
    assert f"shard {m['shards'][1]['file']}: missing" in verify(out)
    (out / "manifest.json").unlink()
    assert "manifest.json: missing" in verify(out)[0]
    r = _cli("verify", out)
    assert r.returncode == 1 and "manifest.json" in r.stderr and "Traceback" not in r.stderr
