"""``weights_tool pack`` with mixed precision and calibrated methods, on tiny random checkpoints
that carry a byte-level tokenizer: the manifest's per-tensor formats and ``quant`` record, a
calibrated pack that verifies and decodes, and every calibration bad input (one line, exit 2,
nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkpoints import write_hf  # noqa: E402
from _cli import assert_clean_failure, run_cli  # noqa: E402
from _tiny_tok import write_byte_tokenizer  # noqa: E402

from weights_tool.corpus import sha256_text  # noqa: E402
from weights_tool.pack import pack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CFG = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
TEXT = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate. "
        "Rough winds do shake the darling buds of May, and summer's lease hath all too short "
        "a date. ") * 12                                                # ~2,300 byte tokens


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    hf = write_hf(d / "hf", seed=7, **CFG)
    write_byte_tokenizer(hf)
    (d / "calib.txt").write_text(TEXT)
    return hf


def _dtypes(manifest):
    return {k: t["dtype"] for k, t in manifest["tensors"].items() if len(t.get("shape", ())) == 2}


def test_mixed_precision_default_and_overrides(src, tmp_path):
    m = pack(src, tmp_path / "a", quant="q4_0", progress=False).manifest
    dt = _dtypes(m)
    assert m["tensors"]["output"] == {"alias": "tok_embeddings"}
    # q4_0 defaults: embedding / LM head, every wv, wk and w2 at q8_0
    eight = {"tok_embeddings"} | {f"layers.{i}.{n}" for i in (0, 1) for n in
                                  ("attention.wv", "attention.wk", "feed_forward.w2")}
    assert {k for k, v in dt.items() if v == "q8_0"} == eight
    assert {v for k, v in dt.items() if k not in eight} == {"q4_0"}
    q = m["quant"]
    assert q["method"] == "rtn" and q["keep"] == [
        "tok_embeddings=q8_0", "output=q8_0", "layers.*.attention.wv=q8_0",
        "layers.*.attention.wk=q8_0", "layers.*.feed_forward.w2=q8_0"]
    assert 4.5 < q["bits_per_weight"] < 8.5
    assert pack(src, tmp_path / "a1", quant="q4_1", progress=False).manifest["quant"]["keep"] \
        == ["tok_embeddings=q8_0", "output=q8_0"]

    u = pack(src, tmp_path / "b", quant="q4_0", uniform=True, progress=False).manifest
    assert set(_dtypes(u).values()) == {"q4_0"} and u["quant"]["keep"] == []
    assert u["quant"]["bits_per_weight"] < q["bits_per_weight"]

    k = pack(src, tmp_path / "c", quant="q4_1", progress=False,
             keep=["layers.*.feed_forward.w2=q8_0", "layers.1.attention.wv=f16"]).manifest
    dt = _dtypes(k)
    assert dt["layers.0.feed_forward.w2"] == dt["layers.1.feed_forward.w2"] == "q8_0"
    assert dt["layers.1.attention.wv"] == "f16" and dt["layers.0.attention.wv"] == "q4_1"
    assert dt["tok_embeddings"] == "q8_0" and dt["layers.0.feed_forward.w1"] == "q4_1"

    # 8-bit and float packings have no default rules
    assert set(_dtypes(pack(src, tmp_path / "d", quant="q8_0", progress=False)
                       .manifest).values()) == {"q8_0"}


@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_calibrated_pack_records_and_verifies(src, tmp_path, method):
    from driver.native.reference import Reference
    from weights_tool.verify import verify
    out = tmp_path / method
    calib = src.parent / "calib.txt"
    m = pack(src, out, quant="q4_0", method=method, calib=calib, calib_tokens=512,
             progress=False).manifest
    q = m["quant"]
    assert q["method"] == method and q["requantized"] > 0
    assert q["calibration"] == {"text": str(calib), "sha256": sha256_text(TEXT),
                                "tokens": 512, "window": 512}
    assert verify(out) == []
    assert _dtypes(m)["layers.0.attention.wq"] == "q4_0"
    # the packed model runs and stays close to the float one (numpy reference decoder)
    f32 = pack(src, tmp_path / "f32", quant="f32", progress=False)
    ids = list(TEXT.encode()[:48])
    a, b = Reference.load(out).logits(ids), Reference.load(f32.out).logits(ids)
    assert np.abs(a - b).max() < 0.25 * np.abs(b).max()


def test_calibration_bad_inputs(src, tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be")
    cases = [
        (["--method", "gptq", "--calib", tmp_path / "missing.txt"], ["not found"]),
        (["--method", "awq", "--calib", empty], ["empty"]),
        (["--method", "gptq", "--calib", short, "--calib-tokens", "64"], ["fewer than"]),
        (["--method", "gptq", "--calib", src.parent / "calib.txt", "--calib-tokens", "100000"],
         ["fewer than"]),
        (["--method", "awq", "--quant", "f16"], ["does not apply to --quant f16"]),
        (["--method", "gptq", "--quant", "f32"], ["does not apply to --quant f32"]),
        (["--method", "gptq", "--quant", "q4_k"], ["does not apply to --quant q4_k",
                                                   "K-quants"]),
        (["--method", "gptq", "--keep-native"], ["--keep-native"]),
        (["--method", "rtn", "--calib", short], ["--method rtn"]),
        (["--keep", "layers.*.attention.wz=q8_0"], ["matches no matrix"]),
        (["--keep", "layers.*.attention.wv=q3_k"], ["unknown format"]),
        (["--keep", "q8_0"], ["PATTERN=FORMAT"]),
    ]
    for extra, words in cases:
        assert_clean_failure(run_cli("pack", src, out, *extra), out, *words)


def test_keep_rules_with_kquants_and_keep_native(src, tmp_path):
    """--keep works with the K-quant --quant values (the width fallback applies to a rule's
    format too) and wins over --keep-native; auto is round to nearest for K-quants."""
    m = pack(src, tmp_path / "k", quant="q4_k", method="auto", progress=False,
             keep=["layers.*.attention.wv=q6_k", "tok_embeddings=q8_0"]).manifest
    dt = _dtypes(m)
    assert m["quant"]["method"] == "rtn" and "calibration" not in m["quant"]
    # width 64: no whole 256-column super-block: q4_k -> q4_1, q6_k -> q8_0 (KQUANT_FALLBACK)
    assert dt["layers.0.attention.wv"] == "q8_0" and dt["layers.0.attention.wq"] == "q4_1"
    assert dt["tok_embeddings"] == "q8_0"
    assert m["quant"]["keep"] == ["layers.*.attention.wv=q6_k", "tok_embeddings=q8_0"]
    n = pack(src, tmp_path / "n", quant="q4_0", keep_native=True, progress=False,
             keep=["layers.0.feed_forward.w2=q8_0"]).manifest
    dt = _dtypes(n)
    assert n["quant"]["method"] == "rtn" and dt["layers.0.feed_forward.w2"] == "q8_0"
    assert dt["layers.1.feed_forward.w2"] == "f32"      # the HF source's own type, kept


def test_calibration_needs_a_tokenizer(tmp_path):
    hf = write_hf(tmp_path / "hf", seed=1, **CFG)                      # no tokenizer.json
    out = tmp_path / "out"
    assert_clean_failure(run_cli("pack", hf, out, "--method", "gptq"), out, "no tokenizer")
    # auto: nothing to calibrate with -> round to nearest, and the summary line says so
    r = run_cli("pack", hf, out)
    assert r.returncode == 0, r.stderr
    assert "q4_0 rtn" in r.stdout
    assert json.loads((out / "manifest.json").read_text())["quant"]["method"] == "rtn"
