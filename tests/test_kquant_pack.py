"""weights_tool pack / verify / inspect with the K-quants: a Q4_K_M-style GGUF kept as it is
(``--keep-native``: mixed q4_k / q6_k, zero requantization error, values bit-identical to
``gguf.quants.dequantize``), ``--quant q4_k|q5_k|q6_k`` from an HF folder (K-quant rules; widths
not a multiple of 256 fall back to q4_1 / q8_0), and bad K-quant input (one line, exit 2,
nothing written)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from _checkpoints import write_hf
from _cli import assert_clean_failure, run_cli
from _gguf_make import Q, make_gguf
from test_pack import check_invariants, decode

from modelfmt.formats import KQUANT_FALLBACK
from modelfmt import kquant
from weights_tool.inspect_cmd import inspect_text
from weights_tool.pack import pack
from modelfmt.quantize import dequantize, quantize
from weights_tool.verify import verify

ROOT = Path(__file__).resolve().parent.parent
WIDE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
GGUF_WIDE = dict(hidden=256, ffn=512, layers=4, heads=4, kv_heads=2, vocab_pad=242)
KEPT = {Q.Q4_K: "q4_k", Q.Q5_K: "q5_k", Q.Q6_K: "q6_k", Q.Q8_0: "q8_0", Q.F32: "f32"}


def same_bits(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture(scope="module")
def q4_k_m(tmp_path_factory):
    d = tmp_path_factory.mktemp("q4km")
    info = make_gguf(d / "m.Q4_K_M.gguf", mix="q4_k_m", tied=False, **GGUF_WIDE)
    return d / "m.Q4_K_M.gguf", info


@pytest.mark.parametrize("max_part", [None, 16384])   # 16 KiB: row blocks slice the copies
def test_keep_native_q4_k_m_is_lossless(q4_k_m, tmp_path, max_part):
    path, info = q4_k_m
    out = tmp_path / "out"
    s = pack(path, out, quant="q6_k" if max_part is None else "q4_0", keep_native=True,
             progress=False, max_part_bytes=max_part)
    m = s.manifest
    assert "fallback" not in m["quant"]   # every width holds whole super-blocks
    kinds = {}
    for canon, qt in info["qtypes"].items():
        e = m["tensors"][canon]
        assert e["dtype"] == KEPT[qt], (canon, e["dtype"], qt)
        kinds[e["dtype"]] = kinds.get(e["dtype"], 0) + 1
        assert same_bits(decode(out, m, canon), info["tensors"][canon][1]), canon
        if len(e["shape"]) == 2:
            assert e["max_abs_err"] == 0.0 and e["mean_abs_err"] == 0.0 and e["src"] == qt.name
    # the Q4_K_M mix: q6_k output and attn_v / ffn_down of layers 2 and 3 of 4, q4_k elsewhere
    assert kinds == {"q4_k": 25, "q6_k": 5, "f32": 9}, kinds
    assert m["tensors"]["layers.2.attention.wv"]["dtype"] == "q6_k"
    assert m["tensors"]["layers.1.feed_forward.w2"]["dtype"] == "q4_k"
    assert s.max_abs_err == 0.0 and verify(out) == []
    check_invariants(out, m, max_part or 128 << 20)
    if max_part:
        assert len(m["tensors"]["output"]["blocks"]) > 1
    line = next(ln for ln in inspect_text(out).splitlines()
                if ln.startswith("layers.2.attention.wv "))
    assert line.split()[1:3] == ["q6_k", "Q6_K"] and line.split()[-1] == "0", line


def test_other_gguf_types_are_requantized_with_error(tmp_path):
    """A Q4_K_M file of a 64-wide model holds llama.cpp's fallbacks (Q5_0 for Q4_K, Q8_0 for
    the Q6_K output): Q8_0 is kept, Q5_0 re-rounded to --quant with its error reported."""
    info = make_gguf(tmp_path / "n.gguf", mix="q4_k_m", tied=False, hidden=64, ffn=128)
    assert {q.name for q in info["qtypes"].values()} == {"Q5_0", "Q8_0", "F32"}
    m = pack(tmp_path / "n.gguf", tmp_path / "out", quant="q4_1", keep_native=True,
             uniform=True, progress=False).manifest   # uniform: no default 8-bit embedding
    for canon, qt in info["qtypes"].items():
        e = m["tensors"][canon]
        if qt == Q.Q5_0:
            assert e["dtype"] == "q4_1" and e["max_abs_err"] > 0 and e["src"] == "Q5_0"
        elif qt == Q.Q8_0:
            assert e["dtype"] == "q8_0" and e["max_abs_err"] == 0.0


@pytest.mark.parametrize("fmt", ["q4_k", "q5_k", "q6_k"])
def test_hf_quant_k(tmp_path, fmt):
    src = write_hf(tmp_path / "hf", tie_word_embeddings=True, **WIDE)
    out = tmp_path / "out"
    s = pack(src, out, quant=fmt, progress=False)
    m = s.manifest
    from safetensors.numpy import load_file
    w = load_file(str(src / "model.safetensors"))["model.layers.1.mlp.down_proj.weight"]
    e = m["tensors"]["layers.1.feed_forward.w2"]
    assert e["dtype"] == fmt and "group_size" not in e and e["src"] == "F32"
    want = dequantize(quantize(w, fmt), fmt, *w.shape)
    assert same_bits(decode(out, m, "layers.1.feed_forward.w2"), want)
    assert e["max_abs_err"] == pytest.approx(float(np.abs(want - w).max()), rel=1e-6)
    assert "fallback" not in m["quant"] and verify(out) == []
    assert m["tensors"]["output"] == {"alias": "tok_embeddings"}


@pytest.mark.parametrize("fmt", ["q4_k", "q6_k"])
def test_hf_quant_k_falls_back_on_narrow_widths(tmp_path, fmt):
    """hidden 64 / ffn 128: no matrix holds whole super-blocks: llama.cpp would write Q5_0 /
    Q8_0, we write KQUANT_FALLBACK (q4_1 / q8_0) and say so in the manifest and the summary."""
    src = write_hf(tmp_path / "hf")
    s = pack(src, tmp_path / "out", quant=fmt, progress=False)
    fb = KQUANT_FALLBACK[fmt]
    mats = [e for e in s.manifest["tensors"].values() if len(e.get("shape", ())) == 2]
    assert mats and all(e["dtype"] == fb for e in mats)
    assert s.manifest["quant"]["fallback"] == {"dtype": fb, "tensors": len(mats),
                                               "why": "width not a multiple of 256"}
    assert f"{len(mats)} matrices as {fb}" in s.line() and verify(tmp_path / "out") == []


# ---- bad input through the CLI: exit 2, one line, nothing written ----
def _tensor_data_offset(path: Path, name: str) -> int:
    from weights_tool.gguf_header import parse_header
    data = path.read_bytes()
    return next(t.offset for t in parse_header(data, len(data)).tensors if t.name == name)


@pytest.mark.parametrize("keep", [True, False])
def test_non_finite_super_block_scale(tmp_path, keep):
    src = tmp_path / "m.gguf"
    make_gguf(src, mix="q4_k_m", tied=False, **GGUF_WIDE)
    b = bytearray(src.read_bytes())
    off = _tensor_data_offset(src, "blk.1.ffn_down.weight") + 3 * 144   # block 3: row 1, sb 1
    b[off:off + 2] = struct.pack("<H", 0x7E00)                        # d = NaN
    src.write_bytes(bytes(b))
    out = tmp_path / "out"
    r = run_cli("pack", src, out, *(["--keep-native"] if keep else ["--quant", "q4_0"]))
    assert_clean_failure(r, out, "blk.1.ffn_down.weight", "Q4_K", "super-block 1 in row 1",
                 "not finite")


def test_truncated_k_tensor(tmp_path):
    src = tmp_path / "m.gguf"
    make_gguf(src, mix="q6_k", tied=True, **GGUF_WIDE)
    src.write_bytes(src.read_bytes()[:-100])
    out = tmp_path / "out"
    assert_clean_failure(run_cli("pack", src, out, "--keep-native"), out, "truncated or corrupt GGUF",
                 "runs past the end")


def test_k_tensor_width_not_multiple_of_256(tmp_path):
    """A Q4_K tensor whose header says 128 columns (half a super-block)."""
    src = tmp_path / "m.gguf"
    make_gguf(src, mix="q4_k_m", tied=False, **GGUF_WIDE)
    b = bytearray(src.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = b.index(name) + len(name)
    assert struct.unpack_from("<IQ", b, at) == (2, 256)               # n_dims, ne0 = columns
    struct.pack_into("<Q", b, at + 4, 128)
    src.write_bytes(bytes(b))
    out = tmp_path / "out"
    assert_clean_failure(run_cli("pack", src, out, "--keep-native"), out, "blk.0.attn_q.weight",
                 "128 columns are not a multiple of its block size 256")


def test_kquant_error_is_one_pack_error_on_hf(tmp_path):
    """HF weights too large for the f16 super-block scale: exit 2, one line."""
    from safetensors.numpy import load_file, save_file
    src = write_hf(tmp_path / "hf", **WIDE)
    t = load_file(str(src / "model.safetensors"))
    t["model.layers.0.mlp.up_proj.weight"][0, :] = np.linspace(-3e9, 3e9, 256)
    save_file(t, str(src / "model.safetensors"))
    out = tmp_path / "out"
    assert_clean_failure(run_cli("pack", src, out, "--quant", "q4_k"), out,
                 "layers.0.feed_forward.w3", "f16 super-block")


def test_block_parser_message_names_the_place():
    raw = np.zeros((2, 2 * 210), np.uint8)
    raw[1, 210 + 208:210 + 210] = [0x00, 0x7C]                      # +inf d, row 1, sb 1
    with pytest.raises(kquant.KQuantError, match="super-block 1 in row 1 is not finite"):
        kquant.from_gguf(raw, "q6_k", 2, 512)


def test_synthetic_source_k_formats():
    """``python -m driver bench synth:PRESET:q4_k``'s random model: the packer's formats (the
    fallback on widths that are not a multiple of 256), a valid manifest, whole records with
    finite f16 scales."""
    from modelfmt.manifest import validate as validate_manifest
    from driver.native.synthetic import SyntheticSource

    def mats(preset, q):
        s = SyntheticSource(preset, q)
        validate_manifest(s.manifest, s.where)
        return {e["dtype"] for e in s.manifest["tensors"].values() if len(e.get("shape", ())) == 2}

    assert mats("llama3.2-1b-shape", "q4_k") == {"q4_k"}
    assert mats("llama3-8b-shape", "q6_k") == {"q6_k"}
    # SmolLM2: hidden 576 -> q4_1, but ffn_down's 1536 columns hold whole super-blocks
    assert mats("smollm-shape", "q4_k") == {"q4_1", "q4_k"}
    assert mats("llama3-tiny", "q6_k") == {"q8_0"}
    s = SyntheticSource("llama3-tiny", "q4_0")
    for fmt, col in (("q4_k", 0), ("q5_k", 0), ("q6_k", 4)):
        words = {"q4_k": 4, "q5_k": 12, "q6_k": 21}[fmt]
        raw = s._fill(fmt, "sb", False)
        rec = np.frombuffer(raw, "<u4").reshape(-1, words)      # whole records only
        halves = rec[:, col].astype("<u4").view("<u2").reshape(-1, 2)
        assert np.isfinite(halves.view(np.float16).astype(np.float32)).all()
