"""The residual-stream rotation (``weights_tool/rotate.py``, ``pack --rotate``): the Hadamard
constructions are exact and Q is orthogonal; with quantization off (f32 packing) the rotated model
computes the same logits as the original (numpy reference, and the real engine on lavapipe), tied
or not; the manifest records it; bad values are one line, exit 2, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkpoints import write_hf  # noqa: E402
from _tiny_tok import write_byte_tokenizer  # noqa: E402
from _cli import assert_clean_failure, run_cli  # noqa: E402

from driver.native.reference import Reference  # noqa: E402
from weights_tool.pack import pack  # noqa: E402
from weights_tool.rotate import (Rotation, hadamard_factors, paley, small_hadamard,  # noqa: E402
                                 sylvester)

TINY = dict(vocab_size=256, intermediate_size=128, num_hidden_layers=2, num_key_value_heads=2)
IDS = list(b"To be, or not to be, that is the question: whether 'tis nobler")


def _spiky(hf: Path) -> None:
    """Give the tiny model's norms outlier channels, so the fold really changes the matrices."""
    from safetensors.numpy import load_file, save_file
    t = load_file(str(hf / "model.safetensors"))
    rng = np.random.default_rng(3)
    for k in t:
        if k.endswith("norm.weight"):
            w = (1 + 0.3 * rng.standard_normal(t[k].shape)).astype(np.float32)
            w[rng.choice(w.size, 2, replace=False)] *= 10
            t[k] = w
    save_file(t, str(hf / "model.safetensors"))


@pytest.fixture(scope="module", params=[(64, False), (96, True)], ids=["untied-64", "tied-96"])
def model(request, tmp_path_factory):
    """(hf folder, its f32 packing): hidden 64 (Sylvester) untied, hidden 96 (48 x 2: Paley) tied."""
    hidden, tied = request.param
    d = tmp_path_factory.mktemp("rot")
    hf = write_hf(d / "hf", seed=11, hidden_size=hidden, num_attention_heads=hidden // 16,
                  tie_word_embeddings=tied, **TINY)                     # head_dim 16
    _spiky(hf)
    write_byte_tokenizer(hf)
    return hf, pack(hf, d / "f32", quant="f32", progress=False).out


# ---- (b) the constructions ----
PALEY = [q + 1 for q in range(3, 256) if all(q % k for k in range(2, q)) and q % 4 == 3]


def test_hadamard_constructions_are_exact():
    for n in PALEY:                                      # 4, 8, 12, 20, 24, ..., 252
        h = paley(n).astype(np.int64)
        assert set(np.unique(h)) == {-1, 1} and (h @ h.T == n * np.eye(n)).all(), n
    for n in (1, 2, 4, 64):
        h = sylvester(n).astype(np.int64)
        assert (h @ h.T == n * np.eye(n)).all(), n
    with pytest.raises(ValueError):
        paley(16)                                        # 15 is not a prime = 3 mod 4
    # the Kronecker factorization of Llama shapes (and SmolLM2's 576); products are exact
    for n in (64, 96, 576, 960, 2048, 3072, 4096, 5120, 8192):
        f = hadamard_factors(n)
        assert f is not None and int(np.prod(f)) == n, n
        assert all(small_hadamard(o).shape == (o, o) for o in f)
    assert hadamard_factors(7) is None and hadamard_factors(6) is None


@pytest.mark.parametrize("n,kind", [(576, "hadamard"), (96, "hadamard"), (64, "random"),
                                    (28 * 3, "hadamard")])
def test_rotation_is_orthogonal(n, kind):
    r = Rotation(n, kind, seed=5)
    Q = r.matrix()
    np.testing.assert_allclose(Q @ Q.T, np.eye(n), atol=1e-12)
    if r.kind == "hadamard":                             # +-1/sqrt(n) everywhere: full mixing
        np.testing.assert_allclose(np.abs(Q), 1 / np.sqrt(n), rtol=1e-12)
        assert r.record()["factors"] == list(hadamard_factors(n))
    x = np.random.default_rng(0).standard_normal((7, n))
    np.testing.assert_allclose(r.right(x), x @ Q, atol=1e-5)
    np.testing.assert_allclose(r.left_t(x.T), Q.T @ x.T, atol=1e-5)
    # seeded: the same seed gives the same Q, another seed another one
    assert np.array_equal(Rotation(n, kind, 5).matrix(), Q)
    assert not np.allclose(Rotation(n, kind, 6).matrix(), Q)


def test_hadamard_falls_back_to_random_and_says_so():
    r = Rotation(92, "hadamard", seed=1)                 # 92 = 4 x 23: no construction here
    rec = r.record()
    assert rec["kind"] == "random" and rec["requested"] == "hadamard" and "92" in rec["why"]
    np.testing.assert_allclose(r.matrix() @ r.matrix().T, np.eye(92), atol=1e-12)


# ---- (a) equivalence with quantization off, (c) the manifest ----
@pytest.mark.parametrize("kind", ["hadamard", "random"])
def test_rotated_f32_packing_keeps_the_logits(model, tmp_path, kind):
    hf, f32 = model
    out = tmp_path / kind
    m = pack(hf, out, quant="f32", rotate=kind, rotate_seed=3, progress=False).manifest
    H = m["config"]["hidden_size"]
    assert m["quant"]["rotate"]["kind"] == kind and m["quant"]["rotate"]["seed"] == 3
    assert m["quant"]["rotate"]["size"] == H
    assert m["config"]["tie_word_embeddings"] is False and "alias" not in m["tensors"]["output"]
    ref, rot = Reference.load(f32), Reference.load(out)
    for k in ("norm", "layers.0.attention_norm", "layers.1.ffn_norm"):
        assert np.array_equal(rot.tensor(k), np.ones(H, np.float32)), k
    for k in ("tok_embeddings", "layers.0.attention.wq", "layers.1.feed_forward.w2"):
        assert np.abs(rot.tensor(k) - ref.tensor(k)).max() > 0.1 * np.abs(ref.tensor(k)).max()
    a, b = ref.logits(IDS), rot.logits(IDS)
    rel = np.abs(a - b).max() / np.abs(a).max()
    assert rel < 1e-5, rel
    assert (a.argmax(-1) == b.argmax(-1)).all()


def test_rotated_calibrated_pack_runs(model, tmp_path):
    """GPTQ calibrates on the rotated model: the 4-bit packing verifies, records both, and stays
    close to the float model; the untied head has its own (8-bit default) blocks."""
    from weights_tool.verify import verify
    hf, f32 = model
    calib = hf.parent / "calib.txt"
    calib.write_text("Shall I compare thee to a summer's day? Thou art more lovely. " * 30)
    out = tmp_path / "q"
    m = pack(hf, out, quant="q4_0", method="gptq", rotate="hadamard", calib=calib,
             calib_tokens=512, progress=False).manifest
    assert m["quant"]["method"] == "gptq" and m["quant"]["rotate"]["kind"] == "hadamard"
    assert m["tensors"]["output"]["dtype"] == m["tensors"]["tok_embeddings"]["dtype"] == "q8_0"
    assert m["tensors"]["layers.0.attention.wq"]["src"].endswith("+rot")
    assert verify(out) == []
    a, b = Reference.load(f32).logits(IDS), Reference.load(out).logits(IDS)
    assert np.abs(a - b).max() < 0.25 * np.abs(a).max()


def test_rotate_bad_input(model, tmp_path):
    hf, _ = model
    out = tmp_path / "out"
    assert_clean_failure(run_cli("pack", hf, out, "--quant", "q4_0", "--rotate", "walsh"), out,
         "unknown rotation 'walsh'", "hadamard")
    assert_clean_failure(run_cli("pack", hf, out, "--quant", "q4_1", "--rotate", "hadamard", "--keep-native"),
         out, "--keep-native")
    assert_clean_failure(run_cli("pack", hf, out, "--quant", "q4_0", "--rotate", "random", "--rotate-seed", "-1"),
         out, "--rotate-seed")


# ---- (a) through the real engine ----
@pytest.mark.gpu
def test_rotated_model_on_the_engine(model, tmp_path, backend):
    """The formerly tied model, untied by the rotation, runs on the GPU engine: same logits as
    the unrotated packing's numpy reference."""
    pytest.importorskip("wgpu", reason="wgpu-py is not installed")
    from driver.native import load
    hf, f32 = model
    out = tmp_path / "rot"
    pack(hf, out, quant="f32", rotate="hadamard", progress=False)
    assert json.loads((out / "manifest.json").read_text())["tensors"]["output"].get("blocks")
    eng = load(out, backend=backend, max_context=128, kv="f32")
    try:
        got = eng.logits(IDS)
    finally:
        eng.close()
    want = Reference.load(f32).logits(IDS)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 2e-4, rel
