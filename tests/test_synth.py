"""weights_tool synth: presets, determinism, the HF layout, and the goldens' checkpoints."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from modelfmt.config import ModelConfig
from modelfmt.formats import HF_TO_CANON, canon_name, expected_tensors
from tests.goldens import golden_names, make_checkpoint
from weights_tool.synth import PRESETS, hf_config, synth


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_configs_are_valid_and_real_shapes(preset):
    cfg = ModelConfig.from_hf(hf_config(preset))
    if preset == "llama3.2-1b-shape":
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == (2048, 16, 8)
        assert cfg.rope_scaling is not None and cfg.tie_word_embeddings
    if preset == "llama3-8b-shape":
        assert (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim) == (4096, 14336, 128)
        assert not cfg.tie_word_embeddings
    if preset == "smollm-shape":
        assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (576, 9, 3)


def test_synth_writes_every_expected_tensor_deterministically(tmp_path):
    over = dict(vocab_size=300, num_hidden_layers=2)
    a = synth(tmp_path / "a", "smollm-shape", seed=7, overrides=over)
    b = synth(tmp_path / "b", "smollm-shape", seed=7, overrides=over)
    c = synth(tmp_path / "c", "smollm-shape", seed=8, overrides=over)
    ta, tb, tc = (load_file(p / "model.safetensors") for p in (a, b, c))
    cfg = ModelConfig.from_hf(json.loads((a / "config.json").read_text()))
    want = expected_tensors(cfg)
    got = {canon_name(k, HF_TO_CANON): v.shape for k, v in ta.items()}
    want.pop("output")  # tied: no lm_head.weight, as transformers saves it
    assert got == want
    assert all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert not np.array_equal(ta["model.embed_tokens.weight"], tc["model.embed_tokens.weight"])
    emb = ta["model.embed_tokens.weight"]
    assert 0.015 < emb.std() < 0.025  # HF initializer_range scale
    norm = ta["model.norm.weight"]
    assert abs(norm.mean() - 1) < 0.05 and norm.std() > 0.05  # not all-ones: norms get tested


def test_synth_bf16_rounds_to_nearest_even(tmp_path):
    out = synth(tmp_path / "m", "smollm-shape", seed=1, dtype="bf16",
                overrides=dict(vocab_size=64, num_hidden_layers=1))
    raw = (out / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    f32 = synth(tmp_path / "f", "smollm-shape", seed=1, dtype="f32",
                overrides=dict(vocab_size=64, num_hidden_layers=1))
    ref = load_file(f32 / "model.safetensors")["model.embed_tokens.weight"]
    e = header["model.embed_tokens.weight"]["data_offsets"]
    bf = np.frombuffer(raw[8 + n + e[0]:8 + n + e[1]], "<u2").astype(np.uint32) << 16
    back = bf.view(np.float32).reshape(ref.shape)
    assert np.all(np.abs(back - ref) <= np.abs(ref) * 2.0 ** -8)


def test_synth_refuses_existing_output_and_bad_override(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FileExistsError):
        synth(tmp_path / "m", "smollm-shape")
    with pytest.raises(ValueError):
        synth(tmp_path / "x", "smollm-shape", overrides=dict(num_key_value_heads=4))
    assert not (tmp_path / "x").exists()


def test_synth_cli_with_real_llama3_tokenizer(tmp_path):
    r = subprocess.run([sys.executable, "-m", "weights_tool", "synth", str(tmp_path / "t"),
                        "--preset", "llama3-tiny", "--seed", "3"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tmp_path / "t" / "tokenizer.json"))
    assert tok.encode("Hello world", add_special_tokens=False).ids == [9906, 1917]
    conf = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    assert "<|start_header_id|>" in conf["chat_template"]


@pytest.mark.parametrize("name", golden_names())
def test_golden_checkpoints_are_reproducible(tmp_path, name):
    make_checkpoint(name, tmp_path)


def test_materialized_random_model_is_a_verified_packing(tmp_path, backend):
    """driver.native.synthetic.materialize (the page bench's big random models) writes a folder
    that `weights_tool verify` accepts and that loads with the same outputs as synth:PRESET:QUANT;
    an existing OUT is refused in one line, exit 2, and left as it was."""
    from driver.native import load
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "driver.native.synthetic", str(out), "llama3-tiny", "q4_0"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    v = subprocess.run([sys.executable, "-m", "weights_tool", "verify", str(out)],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    before = sorted(f.name for f in out.iterdir())
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert sorted(f.name for f in out.iterdir()) == before
    ids = [1, 5, 9, 200]
    a = load(out, backend=backend, max_context=64).logits(ids)
    b = load("synth:llama3-tiny:q4_0", backend=backend, max_context=64).logits(ids)
    np.testing.assert_array_equal(a, b)
