"""weights_tool.pack on small random HF checkpoints: manifest invariants, values, row blocks,
aliases, hashes, shard layout, atomic publish. Values are checked by decoding the shards with
the manifest alone and comparing with quantize() of the source tensors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from _checkpoints import hf_config, hf_tensors, save_bf16, write_hf

from modelfmt import formats
from modelfmt.config import ModelConfig
from modelfmt.formats import FORMATS, HF_TO_CANON, PART_NAMES, canon_name, expected_tensors
from modelfmt.quantize import dequantize, quantize
from weights_tool.pack import pack
from weights_tool.policy import Policy
from weights_tool.source import Source, SourceTensor
from weights_tool.verify import verify


def _read_part(out: Path, m: dict, loc: dict) -> bytes:
    with open(out / m["shards"][loc["shard"]]["file"], "rb") as f:
        f.seek(loc["offset"])
        return f.read(loc["nbytes"])


def decode(out: Path, m: dict, name: str) -> np.ndarray:
    """float32 values of tensor ``name`` from the shards, using only the manifest."""
    e = m["tensors"][name]
    if "alias" in e:
        return decode(out, m, e["alias"])
    if len(e["shape"]) == 1:
        loc = e["blocks"][0]["parts"]["data"]
        return np.frombuffer(_read_part(out, m, loc), "<f4").copy()
    cols = e["shape"][1]
    rows = [dequantize({p: _read_part(out, m, loc) for p, loc in b["parts"].items()},
                       e["dtype"], b["rows"], cols, e.get("group_size", 32))
            for b in e["blocks"]]
    return np.concatenate(rows)


def check_invariants(out: Path, m: dict, max_part: int = formats.MAX_PART_BYTES) -> None:
    """The layout rules of docs/ARCHITECTURE.md, checked here independently of verify()."""
    sizes = []
    for s in m["shards"]:
        data = (out / s["file"]).read_bytes()
        assert len(data) == s["nbytes"]
        sha = hashlib.sha256(data).hexdigest()
        assert sha == s["sha256"] and s["file"].endswith(f"-{sha[:12]}.bin")
        sizes.append(len(data))
    spans = {}
    largest = 0
    for name, e in m["tensors"].items():
        if "alias" in e:
            continue
        row = 0
        for b in e["blocks"]:
            assert b["row_start"] == row
            row += b["rows"]
            assert set(b["parts"]) == set(PART_NAMES[e["dtype"]])
            for loc in b["parts"].values():
                assert loc["offset"] % 256 == 0 and loc["nbytes"] % 4 == 0
                assert loc["nbytes"] <= max_part
                assert loc["offset"] + loc["nbytes"] <= sizes[loc["shard"]]
                span = (loc["offset"], loc["offset"] + loc["nbytes"])
                spans.setdefault(loc["shard"], []).append(span)
                largest = max(largest, loc["nbytes"])
        assert row == (e["shape"][0] if len(e["shape"]) == 2 else 1), name
    for lst in spans.values():
        lst.sort()
        assert all(a[1] <= b[0] for a, b in zip(lst, lst[1:])), "overlapping parts"
    assert m["requirements"]["max_storage_buffer_binding_size"] == largest
    assert m["requirements"]["max_buffer_size"] == largest
    assert m["requirements"]["features"] == []
    # qkv_rope_decode splits to fit; q4_1's gate_up (8) is the most one kernel binds: WebGPU's default
    need = m["requirements"]["max_storage_buffers_per_shader_stage"]
    assert 6 <= need <= 8
    if any(e.get("dtype") == "q4_1" for e in m["tensors"].values()):
        assert need == 8


@pytest.mark.parametrize("quant", ["q4_0", "q4_1", "q8_0", "f16", "f32"])
def test_pack_values_and_invariants(tmp_path, quant):
    src = write_hf(tmp_path / "src", seed=1)
    s = pack(src, tmp_path / "out", quant=quant, progress=False)
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    assert m == s.manifest
    assert m["format"] == "llama3-webgpu" and m["format_version"] == 1
    assert m["name"] == "out" and m["quant"]["scheme"] == quant
    cfg = ModelConfig.from_json(m["config"])
    assert set(m["tensors"]) == set(expected_tensors(cfg))
    check_invariants(out, m)
    assert verify(out) == []
    # values: every tensor decodes to quantize(source) exactly; norms exactly
    from safetensors.numpy import load_file
    ref = load_file(str(src / "model.safetensors"))
    worst, worst_name = 0.0, None
    for hf_name, a in ref.items():
        canon = canon_name(hf_name, HF_TO_CANON)
        got = decode(out, m, canon)
        e = m["tensors"][canon]
        if a.ndim == 1:
            assert e["dtype"] == "f32" and np.array_equal(got, a)
            continue
        # the default mixed precision keeps some matrices of 4-bit packings at q8_0
        fmt = Policy(quant, formats=FORMATS, n_layers=cfg.num_hidden_layers).format(canon)
        assert e["dtype"] == fmt, canon
        if quant in ("q4_0", "q4_1") and canon in ("tok_embeddings", "output"):
            assert fmt == "q8_0"
        want = dequantize(quantize(a, fmt), fmt, *a.shape)
        assert np.array_equal(got, want), canon
        err = float(np.abs(got - a).max())
        assert e["max_abs_err"] == pytest.approx(err)
        assert e["mean_abs_err"] == pytest.approx(float(np.abs(got - a).mean()), rel=1e-5)
        if err > worst:
            worst, worst_name = err, canon
    assert m["stats"]["max_abs_err"] == pytest.approx(worst)
    if quant != "f32":
        assert m["stats"]["worst_tensor"] == worst_name
    assert m["stats"]["total_bytes"] == sum(x["nbytes"] for x in m["shards"])
    # tokenizer files copied, generation defaults from generation_config.json
    assert sorted(m["tokenizer"]["files"]) == ["generation_config.json", "tokenizer_config.json"]
    name = "tokenizer_config.json"
    assert (out / name).read_bytes() == (src / name).read_bytes()
    assert m["generation"] == {"bos_token_id": 128000, "eos_token_ids": [128001, 128008, 128009],
                               "temperature": 0.6, "top_p": 0.9}
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_row_blocks_with_small_part_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "MAX_PART_BYTES", 4096)
    src = write_hf(tmp_path / "src", seed=2, vocab_size=320)
    m = pack(src, tmp_path / "out", quant="q4_0", uniform=True, progress=False).manifest
    emb = m["tensors"]["tok_embeddings"]  # 320 x 64 q4_0: 32 bytes per row -> 128-row blocks
    assert [(b["row_start"], b["rows"]) for b in emb["blocks"]] == [(0, 128), (128, 128), (256, 64)]
    check_invariants(tmp_path / "out", m, max_part=4096)
    assert verify(tmp_path / "out") == []
    from safetensors.numpy import load_file
    a = load_file(str(src / "model.safetensors"))["model.embed_tokens.weight"]
    # each block restarts its scale index at 0, yet the whole decodes like the unblocked tensor
    assert np.array_equal(decode(tmp_path / "out", m, "tok_embeddings"),
                          dequantize(quantize(a, "q4_0"), "q4_0", *a.shape))


def test_tied_embeddings_alias(tmp_path):
    src = write_hf(tmp_path / "src", tie_word_embeddings=True)
    m = pack(src, tmp_path / "out", progress=False).manifest
    assert m["tensors"]["output"] == {"alias": "tok_embeddings"}
    assert m["config"]["tie_word_embeddings"] is True
    assert verify(tmp_path / "out") == []


def test_tied_with_saved_lm_head_still_aliases(tmp_path):
    cfg = hf_config(tie_word_embeddings=True)
    t = hf_tensors(dict(cfg, tie_word_embeddings=False))  # lm_head.weight saved anyway
    src = write_hf(tmp_path / "src", tensors=t, tie_word_embeddings=True)
    m = pack(src, tmp_path / "out", progress=False).manifest
    assert m["tensors"]["output"] == {"alias": "tok_embeddings"}


def test_small_shards_and_big_part_gets_own_shard(tmp_path):
    src = write_hf(tmp_path / "src")
    m = pack(src, tmp_path / "out", quant="f32", shard_mb=16 / 1024, progress=False).manifest
    out = tmp_path / "out"
    check_invariants(out, m)
    limit = 16 * 1024
    for s in m["shards"]:
        if s["nbytes"] > limit:  # only a lone part bigger than a shard may exceed it
            locs = [loc for e in m["tensors"].values() for b in e.get("blocks", ())
                    for loc in b["parts"].values() if m["shards"][loc["shard"]] is s]
            assert len(locs) == 1 and locs[0]["offset"] == 0
    assert len(m["shards"]) > 5
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".bin") == \
        sorted(s["file"] for s in m["shards"])


def test_index_bf16_and_group_size(tmp_path):
    cfg = hf_config()
    t = hf_tensors(cfg, seed=3)
    folder = write_hf(tmp_path / "src", files=3)  # three files + model.safetensors.index.json
    m = pack(folder, tmp_path / "o1", quant="q8_0", group_size=64, progress=False).manifest
    assert m["tensors"]["layers.0.attention.wq"]["group_size"] == 64
    assert verify(tmp_path / "o1") == []
    for f in folder.glob("model-*.safetensors"):
        f.unlink()
    (folder / "model.safetensors.index.json").unlink()
    save_bf16(t, folder / "model.safetensors")
    m = pack(folder, tmp_path / "o2", quant="f32", progress=False).manifest
    from _checkpoints import bf16
    got = decode(tmp_path / "o2", m, "layers.1.feed_forward.w2")
    assert np.array_equal(got, bf16(t["model.layers.1.mlp.down_proj.weight"]))


def test_force_replaces_only_when_complete(tmp_path):
    src = write_hf(tmp_path / "src")
    out = tmp_path / "out"
    pack(src, out, quant="q4_0", progress=False)
    old = json.loads((out / "manifest.json").read_text())
    pack(src, out, quant="q8_0", force=True, progress=False)
    new = json.loads((out / "manifest.json").read_text())
    assert old["quant"]["scheme"] == "q4_0" and new["quant"]["scheme"] == "q8_0"
    assert verify(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no .old / .tmp left
    stale = [p for p in out.iterdir() if p.suffix == ".bin"
             and p.name not in {s["file"] for s in new["shards"]}]
    assert stale == []


class _FakeNative(SourceTensor):
    """A GGUF-like tensor whose source block type is q4_1: pack must copy it bit-exactly."""

    def __init__(self, canon, a, fmt):
        self.canon, self.shape = canon, a.shape
        self.src_dtype = fmt.upper() if a.ndim == 2 else "F32"
        self.a, self.fmt = a, fmt
        self.parts = quantize(a, fmt) if a.ndim == 2 else None

    def load_f32(self):
        if self.parts is None:
            return self.a
        return dequantize(self.parts, self.fmt, *self.shape)

    def native(self, fmt):
        return self.parts if fmt == self.fmt and self.parts is not None else None


class _FakeSource(Source):
    kind = "fake"

    def __init__(self, folder, fmt):
        from weights_tool.hf_load import HFSource
        hf = HFSource(folder)
        self.path, self.config, self.name = hf.path, hf.config, "fake"
        self._t = [_FakeNative(t.canon, t.load_f32(), fmt) for t in hf.tensors()]

    def tensors(self):
        return iter(self._t)


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_native_parts_are_copied_losslessly(tmp_path, fmt):
    src = _FakeSource(write_hf(tmp_path / "src"), fmt)
    m = pack(src, tmp_path / "out", quant=fmt, uniform=True, progress=False).manifest
    assert m["stats"]["max_abs_err"] == 0.0
    assert m["quant"]["source"] == f"fake {fmt.upper()}"
    t = src._t[0]
    e = m["tensors"][t.canon]
    for p, loc in e["blocks"][0]["parts"].items():
        raw = _read_part(tmp_path / "out", m, loc)
        assert raw[:t.parts[p].nbytes] == t.parts[p].tobytes()
    # keep_native: a q4_1 source packed "as q8_0" keeps its own q4_1 bits
    m2 = pack(src, tmp_path / "o2", quant="q4_0" if fmt == "q8_0" else "q8_0", keep_native=True,
              progress=False).manifest
    assert {e["dtype"] for e in m2["tensors"].values() if "blocks" in e} == {fmt, "f32"}
    assert m2["stats"]["max_abs_err"] == 0.0


def test_force_with_bad_source_keeps_old_out(tmp_path):
    from weights_tool.errors import PackError
    src = write_hf(tmp_path / "src")
    out = tmp_path / "out"
    pack(src, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (src / "model.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0{bad}")
    with pytest.raises(PackError, match="malformed safetensors header"):
        pack(src, out, force=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
