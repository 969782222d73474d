"""Golden data from the oracle, HF transformers (run with the Python 3.11 venv holding CPU torch).

    .oracle-venv/bin/python tests/golden/make_goldens.py [--only NAME ...]

Writes ``tests/data/goldens/<name>.npz`` (synthetic checkpoints: logits at every position of a
64-token sequence and 32 greedy tokens) and ``tests/data/goldens/smollm2_chat.json`` (SmolLM2-135M-
Instruct, loaded by transformers straight from the GGUF with its own dequantization, Q/K
un-permutation and tokenizer conversion: three chat prompts, 48 greedy tokens each).

The synthetic checkpoints are re-made by ``weights_tool.synth`` from (preset, overrides, seed); the
sha256 of the safetensors file is stored so a test can tell a changed generator from a wrong engine.
This script imports the project only for ``synth`` (numpy + safetensors), never its engine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests" / "data" / "goldens"

SEQ_LEN = 64        # positions whose logits are compared
PROMPT_LEN = 8      # greedy continuation starts after this many ids
GREEDY = 32         # greedy tokens compared

# name -> (preset, overrides, seed). Together they cover: llama3 rope scaling on and off, tied and
# untied embeddings, GQA ratios 1, 3, 4, 8, head_dim 64 and 128, hidden != heads*head_dim, 3+ layers.
_SMALL = dict(vocab_size=512, num_hidden_layers=3, bos_token_id=0, eos_token_id=[511],
              max_position_embeddings=131072)
_PLAIN = dict(rope_scaling=None, rope_theta=10000.0)
GOLDEN_MODELS = {
    "r1_hd64_llama3rope_tied": ("llama3-tiny", dict(_SMALL, hidden_size=256, intermediate_size=512,
                                num_attention_heads=4, num_key_value_heads=4, head_dim=64), 1),
    "r3_hd64_plainrope_untied": ("llama3-tiny", dict(_SMALL, **_PLAIN, hidden_size=192,
                                 intermediate_size=384, num_attention_heads=6,
                                 num_key_value_heads=2, head_dim=64,
                                 tie_word_embeddings=False), 2),
    "r4_hd128_llama3rope_untied": ("llama3-tiny", dict(_SMALL, hidden_size=256,
                                   intermediate_size=640, num_attention_heads=8,
                                   num_key_value_heads=2, head_dim=128,
                                   tie_word_embeddings=False), 3),
    "r8_hd128_plainrope_tied": ("llama3-tiny", dict(_SMALL, **_PLAIN, hidden_size=320,
                                intermediate_size=768, num_attention_heads=8,
                                num_key_value_heads=1, head_dim=128, num_hidden_layers=4), 4),
    "r2_hd32_llama3_tiny_preset": ("llama3-tiny", dict(vocab_size=512, bos_token_id=0,
                                   eos_token_id=[511]), 5),
}

SMOLLM2_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence why the sky is blue.",
]
SMOLLM2_NEW = 48


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def golden_ids(vocab: int, seed: int) -> np.ndarray:
    """The 64 input ids of a golden model: fixed by its seed (shared with the tests)."""
    return np.random.default_rng(1000 + seed).integers(0, vocab, SEQ_LEN).astype(np.int64)


def make_synthetic(name: str, tmp: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from weights_tool.synth import synth

    preset, overrides, seed = GOLDEN_MODELS[name]
    folder = synth(tmp / name, preset, seed=seed, overrides=overrides, force=True)
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    cfg = json.loads((folder / "config.json").read_text())
    ids = golden_ids(cfg["vocab_size"], seed)
    with torch.no_grad():
        logits = model(torch.tensor(ids[None])).logits[0].float().numpy()  # (64, vocab)
        seq = list(ids[:PROMPT_LEN])
        margins = []
        for _ in range(GREEDY):  # plain greedy with full forwards: no eos handling, no cache
            step = model(torch.tensor([seq])).logits[0, -1].float().numpy()
            top2 = np.sort(step)[-2:]
            margins.append(float(top2[1] - top2[0]))
            seq.append(int(step.argmax()))
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT / f"{name}.npz", input_ids=ids, logits=logits.astype(np.float32),
        greedy_ids=np.array(seq[PROMPT_LEN:], dtype=np.int64),
        greedy_margins=np.array(margins, dtype=np.float32),
        meta=np.array(json.dumps({
            "preset": preset, "overrides": overrides, "seed": seed,
            "safetensors_sha256": sha256(folder / "model.safetensors"),
            "prompt_len": PROMPT_LEN, "oracle": _oracle_versions()})))
    print(f"{name}: logits {logits.shape}, max|logit| {np.abs(logits).max():.4f}, "
          f"min greedy margin {min(margins):.2e}")


def make_smollm2() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weights_tool.fetch import data_path

    gguf = data_path("smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    cases = []
    for prompt in SMOLLM2_PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        seq = list(ids)
        with torch.no_grad():
            out = model.generate(torch.tensor([seq]), max_new_tokens=SMOLLM2_NEW,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
        new = out[0, len(ids):].tolist()
        cases.append({"messages": messages, "prompt_text": text, "prompt_ids": ids,
                      "greedy_ids": new, "greedy_text": tok.decode(new)})
        print(f"smollm2: {prompt!r} -> {tok.decode(new)!r}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "smollm2_chat.json").write_text(json.dumps({
        "gguf": gguf.name, "gguf_sha256": sha256(gguf), "max_new_tokens": SMOLLM2_NEW,
        "note": "transformers loads the GGUF itself (dequantize, Q/K un-permute, tokenizer)",
        "oracle": _oracle_versions(), "cases": cases}, indent=1, ensure_ascii=False))


def _oracle_versions() -> dict:
    import torch
    import transformers
    return {"transformers": transformers.__version__, "torch": torch.__version__}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="golden names (and/or 'smollm2') to regenerate")
    args = ap.parse_args()
    names = args.only or [*GOLDEN_MODELS, "smollm2"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name == "smollm2":
                make_smollm2()
            else:
                make_synthetic(name, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
