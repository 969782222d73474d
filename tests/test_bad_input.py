"""Bad input to ``python -m weights_tool pack``: exit code 2, one line naming the file and the
problem, no traceback, and nothing left behind (no OUT, no OUT.tmp-*)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _checkpoints import hf_config, hf_tensors, write_hf, write_raw_safetensors
from _cli import assert_clean_failure

ROOT = Path(__file__).resolve().parent.parent


def run_pack(src, out, *extra, code=None):
    """Run the CLI (or ``code``, a python snippet ending in the CLI) in a subprocess."""
    argv = ["pack", str(src), str(out), *extra]
    cmd = [sys.executable, "-m", "weights_tool", *argv] if code is None else \
        [sys.executable, "-c", code, *argv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _folder(tmp_path, **over):
    return write_hf(tmp_path / "src", **over)


def _edit_config(src, **changes):
    cfg = json.loads((src / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (src / "config.json").write_text(json.dumps(cfg))


def _header_case(tmp_path, header, data=b"", header_len=None):
    src = _folder(tmp_path)
    write_raw_safetensors(src / "model.safetensors", header, data, header_len)
    return src


def _valid_header():
    return {"model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}}


CASES = {
    "missing config": (lambda p: _then((_folder(p) / "config.json").unlink(), p),
                       ["config.json", "no such file"]),
    "invalid config json": (lambda p: _then((_folder(p) / "config.json").write_text("{oops"), p),
                            ["config.json", "invalid JSON"]),
    "unsupported architecture": (
        lambda p: _edit_config(_folder(p), architectures=["MistralForCausalLM"]) or p / "src",
        ["config.json", "MistralForCausalLM"]),
    "unsupported model type": (lambda p: _edit_config(_folder(p), model_type="qwen2") or p / "src",
                               ["config.json", "qwen2"]),
    "unknown rope type": (
        lambda p: _edit_config(_folder(p), rope_scaling={"rope_type": "yarn", "factor": 4.0})
        or p / "src", ["config.json", "yarn"]),
    "moe": (lambda p: _edit_config(_folder(p), num_local_experts=8) or p / "src",
            ["config.json", "mixture-of-experts"]),
    "missing config field": (lambda p: _edit_config(_folder(p), hidden_size=None) or p / "src",
                             ["config.json", "hidden_size"]),
    "malformed header": (lambda p: _garbage(p),
                         ["model.safetensors", "malformed safetensors header"]),
    "huge header": (lambda p: _header_case(p, _valid_header(), b"\0" * 256, header_len=1 << 40),
                    ["model.safetensors", "over the 100 MB limit"]),
    "header past end": (lambda p: _header_case(p, _valid_header(), b"\0" * 256,
                                               header_len=10_000),
                        ["model.safetensors", "past the end"]),
    "offsets past end": (lambda p: _header_case(p, _valid_header(), b"\0" * 100),
                         ["model.safetensors", "points past the end"]),
    "overlap": (lambda p: _header_case(p, {
        "model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]},
        "model.layers.0.input_layernorm.weight": {"dtype": "F32", "shape": [64],
                                                  "data_offsets": [128, 384]}}, b"\0" * 384),
        ["model.safetensors", "overlap"]),
    "offsets disagree with shape": (lambda p: _header_case(p, {
        "model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 200]}},
        b"\0" * 256), ["model.safetensors", "needs 256"]),
    "unsupported dtype": (lambda p: _header_case(p, {
        "model.norm.weight": {"dtype": "I8", "shape": [64], "data_offsets": [0, 64]}},
        b"\0" * 64), ["model.safetensors", "unsupported dtype 'I8'"]),
    "shape disagrees with config": (lambda p: _shape_case(p), ["model.safetensors",
                                                               "layers.0.self_attn.q_proj.weight",
                                                               "config.json implies [64, 64]"]),
    "missing tensor": (lambda p: _drop_case(p), [
        "missing tensor 'model.layers.1.mlp.up_proj.weight' (layers.1.feed_forward.w3)"]),
    "untied without lm_head": (lambda p: _drop_case(p, "lm_head.weight"),
                               ["missing tensor 'lm_head.weight' (output)", "tie_word_embeddings"]),
    "unknown tensor": (lambda p: _extra_case(p), ["model.safetensors",
                                                  "model.layers.0.self_attn.q_proj.bias"]),
    "no weights": (lambda p: _then((_folder(p) / "model.safetensors").unlink(), p),
                   ["no *.safetensors"]),
    "truncated file": (lambda p: _truncate(p), ["model.safetensors", "past the end"]),
    "missing source": (lambda p: p / "nothing-here", ["nothing-here", "no such file"]),
    "group size": (lambda p: _folder(p), ["--group-size", "tok_embeddings",
                                          "multiple of the group size 48"]),
}
EXTRA = {"group size": ["--group-size", "48"]}


def _then(_, p):
    return p / "src"


def _garbage(p):
    _folder(p)
    raw = b"{not json at all!!!}"
    (p / "src" / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    return p / "src"


def _shape_case(p):
    cfg = hf_config()
    t = hf_tensors(cfg)
    t["model.layers.0.self_attn.q_proj.weight"] = np.zeros((64, 32), np.float32)
    return write_hf(p / "src", tensors=t)


def _drop_case(p, name="model.layers.1.mlp.up_proj.weight"):
    t = hf_tensors(hf_config())
    del t[name]
    return write_hf(p / "src", tensors=t)


def _extra_case(p):
    t = hf_tensors(hf_config())
    t["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
    return write_hf(p / "src", tensors=t)


def _truncate(p):
    src = _folder(p)
    f = src / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    return src


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exit_2(tmp_path, case):
    make, words = CASES[case]
    src = make(tmp_path)
    out = tmp_path / "out"
    r = run_pack(src, out, *EXTRA.get(case, []))
    assert_clean_failure(r, out, *words)


def test_existing_out_without_force(tmp_path):
    src = _folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run_pack(src, out)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {out}: already exists. Pass --force to replace it."]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert r.stdout == ""


DISK_FULL = """
import errno, sys
import weights_tool.pack as P
real = P._Shards._write
def write(self, b):
    if self.pos + len(b) > 20000:   # the disk fills up in the middle of the first shard
        raise OSError(errno.ENOSPC, "No space left on device")
    real(self, b)
P._Shards._write = write
from weights_tool.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full(tmp_path):
    src = _folder(tmp_path)
    out = tmp_path / "out"
    r = run_pack(src, out, code=DISK_FULL)
    assert_clean_failure(r, out, str(out), "disk full", "Free some space")


def test_good_input_still_works_through_cli(tmp_path):
    """The same runner succeeds on a sound folder (so the failures above are the inputs')."""
    src = _folder(tmp_path)
    out = tmp_path / "out"
    r = run_pack(src, out, "--quant", "q4_1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("packed out: ") and "q4_1" in r.stdout and r.stderr == ""
    assert (out / "manifest.json").is_file()
