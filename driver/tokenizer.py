"""Pure-Python byte-level BPE tokenizer reading HF ``tokenizer.json``.

Serves Llama-3's 128k and SmolLM2's 49k vocabularies.

Runs unchanged in CPython and Pyodide (stdlib only). The pipeline is HF ``tokenizers``' for this
family:

1. added tokens (``added_tokens``) are split out of the raw text first, leftmost-longest match;
2. the rest goes through the pre-tokenizer (``driver.pretok``: Split / ByteLevel / Digits /
   Sequence);
3. each piece's UTF-8 bytes are mapped to GPT-2's printable byte characters and BPE-merged by
   merge rank (``ignore_merges``: a piece that is a whole vocabulary entry is taken as is, as
   Llama-3 sets it);
4. the post-processor (TemplateProcessing) adds BOS when ``add_special_tokens``.

Pieces repeat a lot in real text, so the ids of every piece are cached: a long prompt costs one
regex pass plus one dict lookup per piece. Decoding maps ids back to bytes and decodes UTF-8 with
U+FFFD for invalid sequences, as HF does; ``StreamDecoder`` does the same incrementally and never
emits half a character.

CLI: ``python -m driver.tokenizer TOKENIZER_JSON (--bench FILE... | --encode TEXT | --decode IDS)``.
"""

from __future__ import annotations

import codecs
import json
import re
import time

from .pretok import BYTE_TO_CHAR, CHAR_TO_BYTE, TokenizerError, build_pre_tokenizer

__all__ = ["Tokenizer", "StreamDecoder", "TokenizerError", "bench"]

# Stop tokens of the families this driver serves; the manifest's generation config may override
# them.
_KNOWN_EOS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>", "</s>")
_KNOWN_BOS = ("<|begin_of_text|>", "<s>")
_CACHE_LIMIT = (
    1 << 18
)  # pieces kept in the per-piece id cache (bounded so a huge input cannot grow it forever)


class Tokenizer:
    """Byte-level BPE tokenizer from an HF ``tokenizer.json``; same ids as HF ``tokenizers``."""

    # ---- loading ----

    @classmethod
    def from_file(cls, path, **kw) -> "Tokenizer":
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            return cls.from_str(text, **kw)
        except json.JSONDecodeError as e:
            raise TokenizerError(
                f"{path}: not valid JSON ({e}); re-run the setup to refetch it"
            ) from None
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from None

    @classmethod
    def from_str(cls, json_text: str, **kw) -> "Tokenizer":
        return cls(json.loads(json_text), **kw)

    @classmethod
    def from_folder(cls, folder) -> "Tokenizer":
        """``tokenizer.json`` of an HF-style folder, with BOS from ``tokenizer_config.json`` and the
        stop ids from
        ``generation_config.json`` (``eos_token_id``, int or list) when those files are there."""
        import os

        tok = cls.from_file(os.path.join(folder, "tokenizer.json"))
        conf = _read_json(os.path.join(folder, "tokenizer_config.json"))
        gen = _read_json(os.path.join(folder, "generation_config.json"))
        bos = conf.get("bos_token")
        bos = bos.get("content") if isinstance(bos, dict) else bos
        if isinstance(gen.get("bos_token_id"), int):
            tok.bos_token_id = gen["bos_token_id"]
        elif bos is not None and tok.token_to_id(bos) is not None:
            tok.bos_token_id = tok.token_to_id(bos)
        eos = gen.get("eos_token_id")
        if eos is not None:
            tok.eos_token_ids = [eos] if isinstance(eos, int) else list(eos)
        else:
            name = conf.get("eos_token")
            name = name.get("content") if isinstance(name, dict) else name
            if (
                name is not None
                and tok.token_to_id(name) is not None
                and tok.token_to_id(name) not in tok.eos_token_ids
            ):
                tok.eos_token_ids.append(tok.token_to_id(name))
        return tok

    def __init__(
        self, spec: dict, *, bos_token_id: int | None = None, eos_token_ids: list[int] | None = None
    ):
        if not isinstance(spec, dict) or not isinstance(
            (spec.get("model") or {}).get("vocab"), dict
        ):
            raise TokenizerError("not an HF tokenizer.json (no model.vocab object)")
        if spec.get("normalizer") is not None:
            raise TokenizerError(
                f"normalizer {spec['normalizer'].get('type')!r} is not supported "
                "(byte-level BPE tokenizers of this family have none)"
            )
        model = spec.get("model") or {}
        if model.get("type", "BPE") != "BPE":
            raise TokenizerError(
                f"model type {model.get('type')!r} is not supported, only byte-level BPE"
            )
        for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
            if model.get(key):
                raise TokenizerError(f"BPE option {key}={model[key]!r} is not supported")
        if model.get("byte_fallback"):
            raise TokenizerError("BPE byte_fallback is not supported (not a byte-level vocabulary)")
        dec = spec.get("decoder") or {}
        if dec.get("type") != "ByteLevel":
            raise TokenizerError(f"decoder {dec.get('type')!r} is not supported, only ByteLevel")

        self.vocab: dict[str, int] = dict(model["vocab"])
        self.ignore_merges = bool(model.get("ignore_merges", False))
        self._missing = frozenset(
            c for c in BYTE_TO_CHAR if c not in self.vocab
        )  # byte chars with no id
        self._unk = model.get("unk_token") if model.get("unk_token") in self.vocab else None
        self._fuse_unk = bool(model.get("fuse_unk", False))
        # (left, right) -> rank; the merged token is left + right.
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, m in enumerate(model.get("merges", [])):
            pair = tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
            if len(pair) != 2 or pair[0] + pair[1] not in self.vocab:
                raise TokenizerError(
                    f"merge #{rank} {m!r} is malformed or makes a token not in the vocab"
                )
            self._ranks.setdefault(pair, rank)

        self._pretok, byte_level = build_pre_tokenizer(spec.get("pre_tokenizer"))
        if not byte_level:
            raise TokenizerError(
                "pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer"
            )

        # ---- added tokens ----
        self.added: dict[str, int] = {}  # content -> id
        self.special_ids: set[int] = set()  # ids of added tokens with special=true
        self._added_opts: dict[
            str, tuple[bool, bool, bool]
        ] = {}  # content -> (lstrip, rstrip, single_word)
        raw, norm = [], []
        for t in spec.get("added_tokens", []):
            # HF re-derives the id: a content already in the model vocab keeps its vocab id
            tid = self.vocab.get(t["content"], t["id"])
            self.added[t["content"]] = tid
            if t.get("special"):
                self.special_ids.add(tid)
            self._added_opts[t["content"]] = (
                t.get("lstrip", False),
                t.get("rstrip", False),
                t.get("single_word", False),
            )
            (norm if t.get("normalized", not t.get("special")) else raw).append(t["content"])
        # No normalizer, so normalized and raw tokens match on the same text; HF splits the raw ones
        # first.
        self._added_rx = [self._alternation(group) for group in (raw, norm) if group]

        self.id_to_str: dict[int, str] = {i: s for s, i in self.vocab.items()}
        self.id_to_str.update({i: s for s, i in self.added.items()})
        # (vocab_size,) bytes of every id: chars of the byte map -> bytes; otherwise the raw UTF-8
        # (HF's rule).
        self._id_bytes: dict[int, bytes] = {i: _token_bytes(s) for i, s in self.id_to_str.items()}

        self._template = self._post_processor(spec.get("post_processor"))
        self._cache: dict[str, list[int]] = {}

        self.bos_token_id = bos_token_id if bos_token_id is not None else self._default_bos()
        self.eos_token_ids = (
            list(eos_token_ids)
            if eos_token_ids is not None
            else [self.added[n] for n in _KNOWN_EOS if n in self.added]
        )

    @staticmethod
    def _alternation(tokens: list[str]) -> re.Pattern:
        # re tries alternatives left to right: longest first makes it leftmost-longest like HF's
        # Aho-Corasick.
        return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))

    def _post_processor(self, spec: dict | None) -> tuple[list[int], list[int]]:
        """(ids before, ids after) the sequence for ``add_special_tokens=True``."""
        if spec is None or spec.get("type") in ("ByteLevel",):
            return [], []
        if spec["type"] == "Sequence":
            pre, post = [], []
            for sub in spec.get("processors", []):
                a, b = self._post_processor(sub)
                pre, post = a + pre, post + b
            return pre, post
        if spec["type"] == "TemplateProcessing":
            specials = spec.get("special_tokens", {})
            pre, post, seen = [], [], False
            for item in spec["single"]:
                if "Sequence" in item:
                    if item["Sequence"]["id"] != "A" or seen:
                        raise TokenizerError(
                            f"TemplateProcessing single template {spec['single']!r} unsupported"
                        )
                    seen = True
                elif "SpecialToken" in item:
                    (post if seen else pre).extend(specials[item["SpecialToken"]["id"]]["ids"])
            return pre, post
        raise TokenizerError(f"post_processor {spec['type']!r} is not supported")

    def _default_bos(self) -> int | None:
        if self._template[0]:
            return self._template[0][0]
        return next((self.added[n] for n in _KNOWN_BOS if n in self.added), None)

    # ---- vocabulary ----

    @property
    def vocab_size(self) -> int:
        """Distinct ids, added tokens included (HF ``get_vocab_size(with_added_tokens=True)``)."""
        return len(self.id_to_str)

    def token_to_id(self, token: str) -> int | None:
        i = self.added.get(token)
        return i if i is not None else self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.id_to_str.get(token_id)

    # ---- encoding ----

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; added/special tokens written in it are recognised (as HF)."""
        ids: list[int] = []
        for segment, token_id in self._split_added(text):
            if token_id is not None:
                ids.append(token_id)
            elif segment:
                self._encode_plain(segment, ids)
        if add_special_tokens:
            pre, post = self._template
            ids = pre + ids + post
        return ids

    def _split_added(self, text: str) -> list[tuple[str, int | None]]:
        """Text -> [(segment, added id or None)], per added-token regex (raw, then normalized)."""
        parts: list[tuple[str, int | None]] = [(text, None)]
        for rx in self._added_rx:
            out: list[tuple[str, int | None]] = []
            for seg, tid in parts:
                if tid is not None or not seg:
                    out.append((seg, tid))
                    continue
                out.extend(self._split_one(rx, seg))
            parts = out
        return parts

    def _split_one(self, rx: re.Pattern, text: str) -> list[tuple[str, int | None]]:
        out: list[tuple[str, int | None]] = []
        pos = 0
        for m in rx.finditer(text):
            a, b = m.span()
            content = m.group()
            lstrip, rstrip, single_word = self._added_opts[content]
            if single_word and (
                (a > 0 and _is_word(text[a - 1])) or (b < len(text) and _is_word(text[b]))
            ):
                continue
            if a < pos:
                continue  # swallowed by the previous token's rstrip
            if lstrip:
                while a > pos and text[a - 1].isspace():
                    a -= 1
            if rstrip:
                while b < len(text) and text[b].isspace():
                    b += 1
            out.append((text[pos:a], None))
            out.append((content, self.added[content]))
            pos = b
        out.append((text[pos:], None))
        return out

    def _encode_plain(self, text: str, ids: list[int]) -> None:
        cache = self._cache
        for piece in self._pretok(text):
            got = cache.get(piece)
            if got is None:
                got = self._bpe(piece)
                if len(cache) < _CACHE_LIMIT:
                    cache[piece] = got
            ids.extend(got)

    def _bpe(self, piece: str) -> list[int]:
        """Ids of one pre-token: byte-map its UTF-8, then apply merges lowest rank first."""
        try:
            data = piece.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (a JS string can hold them) have no UTF-8: U+FFFD instead, as the
            # browser's TextEncoder does. (HF's Python binding cannot even receive such a string.)
            data = piece.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
        word = "".join([BYTE_TO_CHAR[b] for b in data])
        vocab = self.vocab
        if self.ignore_merges and word in vocab:
            return [vocab[word]]
        syms = list(word)
        if self._missing and not self._missing.isdisjoint(syms):
            syms = self._drop_missing(syms)
        ranks = self._ranks
        while len(syms) > 1:
            best, best_rank = None, None
            for k in range(len(syms) - 1):
                r = ranks.get((syms[k], syms[k + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = k, r
            if best is None:
                break
            left, right = syms[best], syms[best + 1]
            # Merge every occurrence of this pair, left to right (same result as HF's rank/position
            # heap).
            merged: list[str] = []
            k = 0
            while k < len(syms):
                if k < len(syms) - 1 and syms[k] == left and syms[k + 1] == right:
                    merged.append(left + right)
                    k += 2
                else:
                    merged.append(syms[k])
                    k += 1
            syms = merged
        return [vocab[s] for s in syms]

    def _drop_missing(self, syms: list[str]) -> list[str]:
        """HF's rule for byte chars absent from the vocab (SmolLM2 lacks 21 of the 256).

        With no unk token they are dropped (their neighbours become adjacent for merging); with
        one they become unk (fused if asked).
        """
        out: list[str] = []
        for c in syms:
            if c not in self._missing:
                out.append(c)
            elif self._unk is not None and not (self._fuse_unk and out and out[-1] == self._unk):
                out.append(self._unk)
        return out

    # ---- decoding ----

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (special tokens: their text)."""
        try:
            return self._id_bytes[token_id]
        except (KeyError, TypeError):
            raise TokenizerError(
                f"token id {token_id!r} is not in the vocabulary (0..{self.vocab_size - 1})"
            ) from None

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; invalid UTF-8 becomes U+FFFD per maximal invalid subsequence (as HF)."""
        special = self.special_ids if skip_special_tokens else ()
        data = b"".join([self.token_bytes(i) for i in ids if i not in special])
        return data.decode("utf-8", "replace")


class StreamDecoder:
    """Incremental decode: ``push(id)`` returns the newly complete text.

    An unfinished UTF-8 character is held back until its last byte arrives.

    The concatenation of every ``push`` and a final ``flush()`` equals ``tokenizer.decode(all
    ids)``.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip = tokenizer.special_ids if skip_special_tokens else frozenset()
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        if token_id in self.skip:
            return ""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """What is left (an unfinished sequence becomes U+FFFD, as in full decode); resets."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out


def _token_bytes(token: str) -> bytes:
    try:
        return bytes([CHAR_TO_BYTE[c] for c in token])
    except KeyError:
        return token.encode("utf-8")


def _read_json(path: str) -> dict:
    """A JSON object file, or {} when the optional file is absent."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return data


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


# ---- speed ----


def bench(tokenizer: Tokenizer, text: str, repeats: int = 1) -> dict:
    """Encode ``text`` cold (empty piece cache) and warm.

    Returns {'mb', 'tokens', 'cold_mb_s', 'warm_mb_s'}.
    """
    nbytes = len(text.encode("utf-8"))
    tokenizer._cache.clear()
    t0 = time.perf_counter()
    ids = tokenizer.encode(text, add_special_tokens=False)
    cold = time.perf_counter() - t0
    warm = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        tokenizer.encode(text, add_special_tokens=False)
        warm = min(warm, time.perf_counter() - t0)
    return {
        "mb": nbytes / 1e6,
        "tokens": len(ids),
        "cold_mb_s": nbytes / 1e6 / cold,
        "warm_mb_s": nbytes / 1e6 / warm,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m driver.tokenizer", description=__doc__.split("\n")[0]
    )
    ap.add_argument("tokenizer", help="path to a tokenizer.json")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--bench", nargs="+", metavar="FILE", help="encode these text files, print MB/s")
    g.add_argument(
        "--encode", metavar="TEXT", help="print the ids of TEXT (with BOS when configured)"
    )
    g.add_argument("--decode", metavar="IDS", help="print the text of comma/space separated ids")
    args = ap.parse_args(argv)
    try:
        t0 = time.perf_counter()
        tok = Tokenizer.from_file(args.tokenizer)
        load_s = time.perf_counter() - t0
        if args.encode is not None:
            print(tok.encode(args.encode))
        elif args.decode is not None:
            try:
                ids = [int(x) for x in args.decode.replace(",", " ").split()]
            except ValueError:
                raise TokenizerError(f"--decode {args.decode!r}: expected integer ids") from None
            print(tok.decode(ids))
        else:
            text = "".join(open(p, encoding="utf-8").read() for p in args.bench)
            r = bench(tok, text)
            print(
                f"load {load_s:.2f} s; {r['mb']:.2f} MB -> {r['tokens']} tokens; "
                f"cold {r['cold_mb_s']:.2f} MB/s, warm (cached pieces) {r['warm_mb_s']:.2f} MB/s"
            )
    except (OSError, UnicodeDecodeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
