"""GGUF source: config from metadata, Q/K un-permutation, lossless transcodes, refusals.

Oracles: the ``gguf`` package writes the files (GGUFWriter, gguf.quants.quantize) and decodes them
(gguf.quants.dequantize); our ``modelfmt.quantize.dequantize`` of ``native()`` parts must be
bit-identical to it. The Q/K permutation is checked against an index-by-index implementation of
convert_hf_to_gguf's definition in tests/_gguf_make.py.
"""

from __future__ import annotations

import math
from collections import Counter

import gguf
import numpy as np
import pytest
from _gguf_make import Q, deinterleave_rows, interleave_rows, make_gguf

from modelfmt.config import ModelConfig, RopeScaling
from weights_tool.errors import PackError
from weights_tool.gguf_load import (
    GGUFSource,
    derive_llama3_scaling,
    permute_qk,
    repack_blocks,
    unpermute_qk,
)
from modelfmt.quantize import dequantize

NATIVE = {"F32": "f32", "F16": "f16", "Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_1": "q4_1",
          "Q4_K": "q4_k", "Q5_K": "q5_k", "Q6_K": "q6_k"}
FORMATS = ("f32", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    def bits(x):
        return np.ascontiguousarray(x, np.float32).view(np.uint32)

    return a.shape == b.shape and np.array_equal(bits(a), bits(b))


# ---- Q/K permutation ----
@pytest.mark.parametrize("n_head,hd,cols", [(4, 16, 8), (9, 64, 3), (3, 64, 5), (1, 2, 1)])
def test_permutation_matches_convert_hf_to_gguf_and_inverts(n_head, hd, cols):
    w = np.random.standard_normal((n_head * hd, cols)).astype(np.float32)
    g = interleave_rows(w, n_head)
    assert np.array_equal(permute_qk(w, n_head), g)      # our forward == the definition
    assert np.array_equal(unpermute_qk(g, n_head), w)    # exact inverse
    assert np.array_equal(deinterleave_rows(g, n_head), w)
    raw = np.random.randint(0, 256, (n_head * hd, 20), dtype=np.uint8)  # quantized rows move whole
    assert np.array_equal(unpermute_qk(permute_qk(raw, n_head), n_head), raw)


# ---- lossless transcodes ----
@pytest.mark.parametrize("qt", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q5_K, Q.Q6_K])
def test_native_is_bit_identical_to_gguf_dequantize(tmp_path, qt):
    k = qt in (Q.Q4_K, Q.Q5_K, Q.Q6_K)   # 256-column super-blocks: wider matrices
    info = make_gguf(tmp_path / "m.gguf", qtype=qt, tied=False,
                     **(dict(hidden=256, ffn=512, heads=4, kv_heads=2) if k else {}))
    with GGUFSource(tmp_path / "m.gguf") as src:
        seen = set()
        for t in src.tensors():
            seen.add(t.canon)
            _, ref = info["tensors"][t.canon]
            assert same_bits(t.load_f32(), ref), t
            if t.shape == ref.shape and len(t.shape) == 1:
                continue
            fmt = NATIVE[t.src_dtype]
            assert t.src_dtype == qt.name
            parts = t.native(fmt)
            assert parts is not None and set(parts) == {
                "f32": {"data"}, "f16": {"data"}, "q8_0": {"qs", "scales"},
                "q4_0": {"qs", "scales"}, "q4_1": {"qs", "scales", "mins"},
                "q4_k": {"qs", "sb"}, "q5_k": {"qs", "sb"}, "q6_k": {"qs", "sb"}}[fmt]
            rows, cols = t.shape
            assert same_bits(dequantize(parts, fmt, rows, cols), ref), t
            for other in FORMATS:
                if other != fmt:
                    assert t.native(other) is None
            if fmt in ("q4_0", "q4_1", "q8_0"):
                assert t.native(fmt, group_size=64) is None  # blocks are 32 wide
            if k:   # the group size does not apply to super-blocks
                assert same_bits(dequantize(t.native(fmt, group_size=64), fmt, rows, cols), ref)
        assert seen == set(info["tensors"])


def test_repack_layout_by_hand():
    """One Q4_1 block spelled out: byte i holds element i (low) and i+16 (high)."""
    q = np.arange(32) % 16                                   # element values 0..15, 0..15
    raw = np.zeros(20, np.uint8)
    raw[0:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    raw[2:4] = np.frombuffer(np.float16(-1.0).tobytes(), np.uint8)
    raw[4:] = (q[:16] | (q[16:] << 4)).astype(np.uint8)
    parts = repack_blocks(raw.reshape(1, 20), "Q4_1", 1, 32)
    words = parts["qs"][0]
    got = [(int(words[c // 8]) >> (4 * (c % 8))) & 15 for c in range(32)]
    assert got == q.tolist()
    assert parts["scales"][0, 0] == np.float16(0.5).view(np.uint16)
    assert parts["mins"][0, 0] == np.float16(-1.0).view(np.uint16)
    ref = gguf.quants.dequantize(raw.reshape(1, 20), Q.Q4_1)
    assert same_bits(dequantize(parts, "q4_1", 1, 32), ref)


@pytest.mark.parametrize("qt,hidden", [(Q.BF16, 64), (Q.Q5_0, 64), (Q.Q2_K, 256), (Q.Q3_K, 256)])
def test_other_types_dequantize_through_gguf(tmp_path, qt, hidden):
    info = make_gguf(tmp_path / "m.gguf", qtype=qt, hidden=hidden, ffn=256, layers=1,
                     embed_qtype=Q.F16)
    with GGUFSource(tmp_path / "m.gguf") as src:
        for t in src.tensors():
            _, ref = info["tensors"][t.canon]
            assert same_bits(t.load_f32(), ref), t
            if t.src_dtype == qt.name:
                assert all(t.native(f) is None for f in FORMATS)


# ---- config ----
def test_config_from_metadata(tmp_path):
    make_gguf(tmp_path / "m.gguf", hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, ctx=4096,
              theta=500000.0, vocab_pad=5)
    with GGUFSource(tmp_path / "m.gguf") as src:
        c = src.config
        assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (64, 128, 2)
        assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (4, 2, 16)
        assert (c.rms_norm_eps, c.rope_theta, c.max_position_embeddings) == (1e-5, 500000.0, 4096)
        assert c.vocab_size == 3 + 256 + 10 + 1 + 5
        assert c.tie_word_embeddings and c.rope_scaling is None
        assert c.bos_token_id == 1 and c.eos_token_id == (2, 0)  # eos, then <|endoftext|> (EOG)
        assert src.kind == "gguf" and src.name == "m"
        names = [t.canon for t in src.tensors()]
        assert "output" not in names and names[0] == "tok_embeddings" and names[-1] == "norm"
        assert ModelConfig.from_json(c.to_json()) == c
    make_gguf(tmp_path / "u.gguf", tied=False, extra_kv={"llama.attention.key_length": 16})
    with GGUFSource(tmp_path / "u.gguf") as src:
        assert not src.config.tie_word_embeddings
        assert [t.canon for t in src.tensors()][-1] == "output"


def llama_cpp_rope_factors(theta, dim, factor, low, high, old_ctx):
    """convert_hf_to_gguf's LlamaModel rope_freqs for rope_type llama3, from its definition."""
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / theta ** (i / dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


@pytest.mark.parametrize("factor,hd", [(8.0, 64), (32.0, 64), (16.0, 128)])
def test_llama3_rope_scaling_from_rope_freqs(tmp_path, factor, hd):
    freqs = llama_cpp_rope_factors(500000.0, hd, factor, 1.0, 4.0, 8192)
    make_gguf(tmp_path / "m.gguf", hidden=4 * hd, heads=4, kv_heads=1, layers=1, theta=500000.0,
              rope_freqs=freqs, ctx=131072)
    with GGUFSource(tmp_path / "m.gguf") as src:
        assert src.config.rope_scaling == RopeScaling(factor, 1.0, 4.0, 8192)
        base = 1.0 / 500000.0 ** (np.arange(0, hd, 2) / hd)
        np.testing.assert_allclose(src.config.rope_inv_freq(), base / freqs, rtol=1e-6)
        assert "rope_freqs" not in {t.canon for t in src.tensors()}


def test_rope_scaling_derivation_other_settings():
    for low, high, orig in ((2.0, 8.0, 8192), (1.0, 2.0, 4096)):
        f = llama_cpp_rope_factors(500000.0, 128, 8.0, low, high, orig).astype(np.float64)
        rs = derive_llama3_scaling(f, 500000.0, 128, orig)
        assert rs == RopeScaling(8.0, low, high, orig)
    assert derive_llama3_scaling(np.ones(32), 1e4, 64) is None
    assert derive_llama3_scaling(np.linspace(1, 3, 32)[::-1], 1e4, 64) is False
    assert derive_llama3_scaling(np.ones(31), 1e4, 64) is False


# ---- refusals: one PackError naming the file ----
REFUSALS = [
    ({"arch": "qwen2"}, "unsupported architecture 'qwen2'"),
    ({"extra_kv": {"llama.expert_count": 8}}, "mixture-of-experts"),
    ({"skip": ("blk.1.ffn_up.weight",)}, "missing tensor 'layers.1.feed_forward.w3'"),
    ({"extra_tensors": {"blk.0.attn_q.bias": np.zeros(64, np.float32)}}, "unknown tensor"),
    ({"pre": "tekken"}, "unknown pre-tokenizer 'tekken'"),
    ({"extra_kv": {"llama.rope.scaling.type": "yarn"}}, "rope scaling type 'yarn'"),
    ({"rope_freqs": np.linspace(1, 3, 8).astype(np.float32)}, "rope_freqs.weight does not match"),
    ({"extra_kv": {"llama.rope.dimension_count": 8}}, "partial rotary"),
    ({"extra_kv": {"llama.block_count": 3}}, "missing tensor 'layers.2"),
    ({"extra_kv": {"llama.context_length": "long"}}, "wrong type"),
    ({"extra_kv": {"llama.attention.head_count_kv": 3}}, "multiple of num_key_value_heads"),
    ({"extra_kv": {"tokenizer.ggml.model": "llama"}}, "SentencePiece"),
    ({"extra_kv": {"llama.vocab_size": 999}}, "GGUF metadata implies [999, 64]"),
    ({"extra_tensors": {"blk.2.attn_norm.weight": np.ones(64, np.float32)}}, "unexpected tensor"),
]


@pytest.mark.parametrize("kw,msg", REFUSALS, ids=[m[:24] for _, m in REFUSALS])
def test_refusals(tmp_path, kw, msg):
    kw = dict(kw)
    extra = kw.pop("extra_kv", {})
    # keys GGUFWriter writes itself cannot be added twice: drop ours so the override wins
    path = tmp_path / "m.gguf"
    if extra:
        _write_with_overrides(path, extra, **kw)
    else:
        make_gguf(path, **kw)
    with pytest.raises(PackError) as e:
        GGUFSource(path)
    assert msg in str(e.value) and str(path) in str(e.value)


def _write_with_overrides(path, extra, **kw):
    """make_gguf, then rewrite its metadata with ``extra`` replacing / adding keys (GGUFReader)."""
    tmp = path.with_suffix(".base.gguf")
    make_gguf(tmp, **kw)
    r = gguf.GGUFReader(tmp)
    w = gguf.GGUFWriter(str(path), r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in extra:
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_array(k, f.contents())
        else:
            w.add_key_value(k, f.contents(), t)
    for k, v in extra.items():
        if isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_uint32(k, v)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- truncated / not GGUF ----
def test_truncated_files_raise_packerror(tmp_path):
    src = tmp_path / "m.gguf"
    make_gguf(src, qtype=Q.Q4_1)
    data = src.read_bytes()
    cuts = sorted({0, 3, 4, 8, 23, 24, 25, 100, 1000, 3000, len(data) // 2, len(data) - 1,
                   *range(0, len(data), 997)})
    for cut in cuts:
        p = tmp_path / "cut.gguf"
        p.write_bytes(data[:cut])
        with pytest.raises(PackError) as e:
            GGUFSource(p)
        assert "truncated or corrupt GGUF" in str(e.value), cut


@pytest.mark.parametrize("blob,msg", [
    (b"\x00" * 100, "bad magic"),
    (b"GGUF" + (1).to_bytes(4, "little") + b"\0" * 16, "version 1"),
    (b"GGUF" + (3 << 16).to_bytes(4, "little") + b"\0" * 16, "big-endian"),
    (b"GGUF" + (3).to_bytes(4, "little") + (10 ** 12).to_bytes(8, "little") + b"\0" * 8,
     "tensor count"),
    (b"GGUF" + (3).to_bytes(4, "little") + b"\0" * 8 + (2 ** 63).to_bytes(8, "little"),
     "metadata count"),
])
def test_bad_headers(tmp_path, blob, msg):
    p = tmp_path / "bad.gguf"
    p.write_bytes(blob)
    with pytest.raises(PackError, match=msg):
        GGUFSource(p)


def test_huge_array_count_is_refused_before_gguf_loops(tmp_path):
    """An array claiming 2**40 items would make GGUFReader loop ~forever: refused up front."""
    src = tmp_path / "m.gguf"
    make_gguf(src)
    data = bytearray(src.read_bytes())
    i = data.find(b"tokenizer.ggml.merges") + len(b"tokenizer.ggml.merges") + 4 + 4
    assert int.from_bytes(data[i:i + 8], "little") == 10  # the merges count
    data[i:i + 8] = (2 ** 40).to_bytes(8, "little")
    p = tmp_path / "huge.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(PackError, match="does not fit"):
        GGUFSource(p)


# ---- our header parser against gguf.GGUFReader ----
def assert_same_as_gguf_reader(src: GGUFSource, reader) -> None:
    """Metadata values and the tensor table equal what the gguf package reads."""
    theirs = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert src.meta == theirs
    assert src.header.data_offset == reader.data_offset
    ours = {t.name: t for t in src.header.tensors}
    assert list(ours) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        o = ours[t.name]
        assert (o.dims, o.ggml_type, o.offset, o.nbytes) == (
            tuple(int(d) for d in t.shape), int(t.tensor_type), t.data_offset, t.n_bytes)


@pytest.mark.parametrize("qt", [Q.Q4_1, Q.F16])
def test_header_parse_matches_gguf_reader(tmp_path, qt):
    p = tmp_path / "m.gguf"
    make_gguf(p, qtype=qt, tied=False, rope_freqs=np.ones(8, np.float32),
              extra_kv={"general.name": "tiny ü", "llama.rope.scaling.type": "none"})
    with GGUFSource(p) as src:
        assert_same_as_gguf_reader(src, gguf.GGUFReader(p))


# ---- the real SmolLM2 GGUF ----
@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    with GGUFSource(smollm2_gguf) as src:
        yield src


@pytest.fixture(scope="module")
def smol_reader(smollm2_gguf):
    return gguf.GGUFReader(smollm2_gguf)


def test_smollm2_header_matches_gguf_reader(smol, smol_reader):
    assert_same_as_gguf_reader(smol, smol_reader)


def test_smollm2_config_and_tensors(smol):
    c = smol.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert (c.rms_norm_eps, c.rope_theta, c.max_position_embeddings) == (1e-5, 100000.0, 8192)
    assert c.vocab_size == 49152 and c.tie_word_embeddings and c.rope_scaling is None
    assert c.bos_token_id == 1 and c.eos_token_id[0] == 2
    ts = list(smol.tensors())
    assert Counter(t.src_dtype for t in ts) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert smol.name == "smollm2-135m-instruct"


def test_smollm2_lossless_and_unpermuted(smol, smol_reader):
    raw = {t.name: t for t in smol_reader.tensors}
    by = {t.canon: t for t in smol.tensors()}
    for canon, name, n_head in (("layers.0.attention.wq", "blk.0.attn_q.weight", 9),
                                ("layers.7.attention.wk", "blk.7.attn_k.weight", 3),
                                ("layers.29.feed_forward.w2", "blk.29.ffn_down.weight", None),
                                ("tok_embeddings", "token_embd.weight", None)):
        rt = raw[name]
        ref = np.asarray(gguf.quants.dequantize(np.asarray(rt.data), rt.tensor_type), np.float32)
        if n_head:
            ref = deinterleave_rows(ref, n_head)
        t = by[canon]
        fmt = NATIVE[t.src_dtype]
        assert same_bits(dequantize(t.native(fmt), fmt, *t.shape), ref), canon
        assert same_bits(t.load_f32(), ref), canon


# ---- through the packer: shards hold exactly gguf's values ----
def read_packed(out) -> dict[str, np.ndarray]:
    """Every non-alias tensor of a packed folder, dequantized from its shard bytes."""
    import json

    m = json.loads((out / "manifest.json").read_text())
    shards = [(out / s["file"]).read_bytes() for s in m["shards"]]
    res = {}
    for name, e in m["tensors"].items():
        if "alias" in e:
            continue
        cols = e["shape"][-1]
        blocks = []
        for b in e["blocks"]:
            parts = {k: shards[p["shard"]][p["offset"]:p["offset"] + p["nbytes"]]
                     for k, p in b["parts"].items()}
            blocks.append(dequantize(parts, e["dtype"], b["rows"], cols, e.get("group_size", 32)))
        res[name] = np.concatenate(blocks).reshape(e["shape"])
    return res


@pytest.mark.parametrize("quant,qt,embed,keep", [("q4_1", Q.Q4_1, Q.Q8_0, True),
                                                 ("q4_0", Q.Q4_0, Q.Q4_0, False),
                                                 ("q8_0", Q.Q8_0, Q.F16, True)])
def test_pack_is_lossless_end_to_end(tmp_path, quant, qt, embed, keep):
    from weights_tool.pack import pack

    info = make_gguf(tmp_path / "m.gguf", qtype=qt, embed_qtype=embed, vocab_pad=60)
    summary = pack(tmp_path / "m.gguf", tmp_path / "out", quant=quant, progress=False,
                   keep_native=keep, max_part_bytes=8192,  # small parts: row blocks get sliced
                   uniform=True)                           # every matrix in ``quant``
    got = read_packed(tmp_path / "out")
    assert set(got) == set(info["tensors"])
    for canon, (_, ref) in info["tensors"].items():
        assert same_bits(got[canon], ref), canon
    assert summary.max_abs_err == 0.0
    import json

    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(m["tensors"]["tok_embeddings"]["blocks"]) > 1
    assert m["tensors"]["output"] == {"alias": "tok_embeddings"}
