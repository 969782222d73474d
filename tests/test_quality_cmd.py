"""``python -m driver quality`` on lavapipe: perplexity over text windows equals the numpy
reference's, a packing compared with itself agrees completely, and bad input is one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu-py is not installed")

from driver.native.quality import run_quality  # noqa: E402
from driver.native.reference import Reference  # noqa: E402

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkpoints import write_hf  # noqa: E402
from _tiny_tok import write_byte_tokenizer  # noqa: E402

TEXT = ("Now is the winter of our discontent made glorious summer by this sun of York; and all "
        "the clouds that lour'd upon our house in the deep bosom of the ocean buried. ") * 4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from weights_tool.pack import pack
    d = tmp_path_factory.mktemp("quality")
    hf = write_hf(d / "hf", seed=11, vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  tie_word_embeddings=True)
    write_byte_tokenizer(hf)
    (d / "text.txt").write_text(TEXT)
    return {q: pack(hf, d / q, quant=q, progress=False).out for q in ("f32", "q4_0")}


def test_perplexity_windows_and_self_agreement(models, backend):
    out = io.StringIO()
    rows = run_quality([models["f32"], models["f32"], models["q4_0"]], n_tokens=200,
                       backend=backend, text=TEXT, window=64, out=out)
    ref, same, q4 = rows
    # 200 text tokens in windows of 64 (no BOS prefix): each window scores len - 1 positions
    assert ref["tokens"] == 200 - 4
    from driver.tokenizer import Tokenizer
    ids = Tokenizer.from_file(Path(models["f32"]) / "tokenizer.json").encode(
        TEXT, add_special_tokens=False)[:200]

    def position_nll(model):   # next-token NLL per position, windows of 64 as the command
        r, out = Reference.load(models[model]), []
        for i in range(0, 200, 64):
            w = ids[i:i + 64]
            z = r.logits(w).astype(np.float64)
            lp = z - z.max(-1, keepdims=True)
            lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
            out += [-lp[t, w[t + 1]] for t in range(len(w) - 1)]
        return out

    nll = position_nll("f32")
    assert abs(ref["perplexity"] / np.exp(np.mean(nll)) - 1) < 1e-3
    assert same["top1_agreement"] == 1.0 and same["mean_kl"] < 1e-6
    assert same["greedy_common_prefix"] == same["greedy_tokens"]
    assert ref["bits_per_weight"] == 32.0 and q4["bits_per_weight"] < 8.6
    assert q4["bytes"] < ref["bytes"] / 3
    assert 0 < q4["mean_kl"] <= q4["p99_kl"] <= q4["max_kl"]
    assert "scored positions" in out.getvalue()
    # --numpy: the same figures from the numpy reference forward
    npy = run_quality([models["f32"], models["q4_0"]], n_tokens=200, text=TEXT, window=64,
                      out=io.StringIO(), numpy=True)
    assert abs(npy[0]["perplexity"] / ref["perplexity"] - 1) < 1e-3
    assert abs(npy[1]["mean_kl"] - q4["mean_kl"]) < 0.05 * q4["mean_kl"] + 1e-4
    # the paired NLL difference and its standard error, from per-position NLLs computed here
    assert same["nll_delta"] == 0.0 and same["nll_delta_se"] == 0.0
    nq = position_nll("q4_0")
    d = np.asarray(nq) - np.asarray(nll)                                # (196,) paired
    assert abs(npy[1]["nll_delta"] - d.mean()) < 1e-4 * max(1.0, abs(d.mean()))
    assert abs(npy[1]["nll_delta_se"] / (d.std(ddof=1) / np.sqrt(len(d))) - 1) < 1e-3
    assert abs(np.exp(npy[1]["nll_delta"]) - npy[1]["perplexity"] / npy[0]["perplexity"]) < 1e-6


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "driver", "quality", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_cli_json_and_bad_input(models, tmp_path):
    text = Path(models["f32"]).parent / "text.txt"
    r = run_cli(models["f32"], models["q4_0"], "--text", text, "--tokens", "100", "--window",
                "50", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[1]["tokens"] == 98 and rows[1]["quant"] == "q4_0"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for extra, word in [(["--text", tmp_path / "nope.txt"], "not found"),
                        (["--text", empty], "empty"),
                        (["--text", text, "--tokens", "100000"], "fewer than")]:
        r = run_cli(models["f32"], models["q4_0"], *extra)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and word in lines[0], r.stderr
