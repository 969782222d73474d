"""K-quant goldens from the oracle, HF transformers, on the weights of K-quant GGUF files
(run with the Python 3.11 venv holding CPU torch, as make_goldens.py).

    .oracle-venv/bin/python tests/golden/make_kquant_goldens.py [--only NAME ...]

Per entry of KQUANT_GOLDENS: ``tests/_gguf_make.make_gguf`` writes a small llama GGUF whose
matrices are K-quant blocks from our quantizer (modelfmt/kquant.py), typed as llama-quantize
types a Q4_K_M file (Q6_K output, attn_v / ffn_down of the use_more_bits layers; Q4_K elsewhere)
or a Q6_K file. The file is then read back with ``gguf.GGUFReader``, every tensor dequantized with
``gguf.quants.dequantize`` and the Q/K rows un-permuted (tests/_gguf_make.deinterleave_rows,
written from convert_hf_to_gguf's definition), and transformers' LlamaForCausalLM (fp32, CPU)
computes logits at every position of a 64-token sequence and 32 greedy tokens on those weights.
Nothing of the project's packer or engine is used here.

Writes ``tests/data/goldens/kquant/<name>.npz``: input_ids, logits, greedy_ids, greedy_margins as
the other goldens, and meta with the make_gguf arguments and the GGUF file's sha256, so a test can
tell a changed quantizer (different file) from a wrong engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = ROOT / "tests" / "data" / "goldens" / "kquant"

from make_goldens import GREEDY, PROMPT_LEN, golden_ids, sha256  # noqa: E402

# name -> make_gguf arguments (vocab 270 tiny tokens + pads = 512; widths multiples of 256)
KQUANT_GOLDENS = {
    "k1_q4_k_m_untied": dict(mix="q4_k_m", vocab_pad=242, hidden=256, ffn=512, layers=4,
                             heads=4, kv_heads=2, tied=False, seed=11, theta=10000.0),
    "k2_q6_k_tied": dict(mix="q6_k", vocab_pad=242, hidden=256, ffn=768, layers=2, heads=8,
                         kv_heads=2, tied=True, seed=12, theta=500000.0),
}

_HF = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
       "output.weight": "lm_head.weight"}
_HF_LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_down": "mlp.down_proj", "ffn_up": "mlp.up_proj"}


def dequantized_state(path: Path, heads: int, kv_heads: int) -> dict:
    """HF name -> float32 array, from the GGUF file alone (gguf's reader and dequantizer)."""
    import gguf
    from _gguf_make import deinterleave_rows

    out = {}
    for t in gguf.GGUFReader(path).tensors:
        shape = tuple(int(d) for d in reversed(t.shape))      # GGUF lists columns first
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
        if t.name in _HF:
            name = _HF[t.name]
        else:
            _, i, kind, _ = t.name.split(".")
            name = f"model.layers.{i}.{_HF_LAYER[kind]}.weight"
            if kind in ("attn_q", "attn_k"):
                w = deinterleave_rows(w, heads if kind == "attn_q" else kv_heads)
        out[name] = w
    return out


def make(name: str, tmp: Path) -> None:
    import torch
    from _gguf_make import make_gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = KQUANT_GOLDENS[name]
    path = tmp / f"{name}.gguf"
    info = make_gguf(path, **kw)
    vocab, hidden = info["vocab"], kw["hidden"]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=kw["ffn"],
                      num_hidden_layers=kw["layers"], num_attention_heads=kw["heads"],
                      num_key_value_heads=kw["kv_heads"], head_dim=hidden // kw["heads"],
                      rms_norm_eps=1e-5, rope_theta=kw["theta"], max_position_embeddings=2048,
                      tie_word_embeddings=kw["tied"], attention_bias=False, mlp_bias=False,
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).float().eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in
             dequantized_state(path, kw["heads"], kw["kv_heads"]).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if kw["tied"] else set()), \
        (missing, unexpected)
    if kw["tied"]:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    seed = kw["seed"]
    ids = golden_ids(vocab, seed)
    with torch.no_grad():
        logits = model(torch.tensor(ids[None])).logits[0].float().numpy()   # (64, vocab)
        seq = list(ids[:PROMPT_LEN])
        margins = []
        for _ in range(GREEDY):
            step = model(torch.tensor([seq])).logits[0, -1].float().numpy()
            top2 = np.sort(step)[-2:]
            margins.append(float(top2[1] - top2[0]))
            seq.append(int(step.argmax()))
    import transformers
    kinds = sorted({q.name for q in info["qtypes"].values()})
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT / f"{name}.npz", input_ids=ids, logits=logits.astype(np.float32),
        greedy_ids=np.array(seq[PROMPT_LEN:], dtype=np.int64),
        greedy_margins=np.array(margins, dtype=np.float32),
        meta=np.array(json.dumps({
            "make_gguf": kw, "gguf_sha256": sha256(path), "ggml_types": kinds,
            "qtypes": {k: v.name for k, v in info["qtypes"].items()}, "prompt_len": PROMPT_LEN,
            "oracle": {"transformers": transformers.__version__, "torch": torch.__version__,
                       "numpy": np.__version__}})))
    print(f"{name}: {kinds}, logits {logits.shape}, max|logit| {np.abs(logits).max():.4f}, "
          f"min greedy margin {min(margins):.2e}, gguf sha256 {sha256(path)[:12]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="golden names to regenerate")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(KQUANT_GOLDENS):
            make(name, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
