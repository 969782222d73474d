"""GGUF tokenizer metadata -> Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json,
generation_config.json).

llama.cpp keeps a byte-level BPE tokenizer (``tokenizer.ggml.model == "gpt2"``) as parallel arrays
(``tokens``, ``token_type``, ``merges``) plus a pre-tokenizer *name* (``tokenizer.ggml.pre``) that
stands for a fixed list of split regexes in llama.cpp's ``llama-vocab.cpp``. This module rebuilds
the HF ``tokenizers`` JSON that produces the same pieces: the vocabulary and merges verbatim (GGUF
keeps the byte-level strings, e.g. "Ġworld"), the pre-tokenizer of the named family, special
tokens from the CONTROL / USER_DEFINED token types, and BOS handling from ``add_bos_token``.

Pure metadata work: the input is a plain dict {key: python value} (see ``GGUFSource``), so tests can
feed it directly. SentencePiece GGUFs (``tokenizer.ggml.model == "llama"``, Llama-2) are refused:
the driver's tokenizer is byte-level BPE only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import PackError

# ---- llama.cpp token types (gguf.TokenType) ----
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

# ---- pre-tokenizer families (llama-vocab.cpp: name -> regex list) ----
# Llama-3 (and the families llama.cpp maps to LLAMA_VOCAB_PRE_TYPE_LLAMA3): one split regex, then
# byte-level without its own regex. llama.cpp spells "(?i:'s|...)" as "(?:'[sS]|...)" (same
# language).
LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
                "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
PRE_LLAMA3 = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
              "lfm2")
# SmolLM / StarCoder family: "\p{N}" (every digit alone), then the GPT-2 regex.
PRE_DIGITS_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                   "minerva-7b")
# Plain GPT-2 regex (HF ByteLevel's built-in one). "default" (files written before llama.cpp
# recorded a pre-tokenizer) is read as GPT-2 too, which is what such HF tokenizers used.
PRE_GPT2 = ("gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4",
            "default")

# Tokens llama.cpp treats as end-of-generation when they are CONTROL tokens (llama-vocab.cpp).
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
             "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>")

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}


def _pre_tokenizer(pre: str) -> tuple[dict, bool, bool]:
    """(HF pre_tokenizer, ignore_merges, default add_bos) for llama.cpp's pre-tokenizer ``pre``."""
    if pre in PRE_LLAMA3:
        return ({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated",
             "invert": False},
            dict(_BYTE_LEVEL, use_regex=False)]}, True, True)
    if pre in PRE_DIGITS_GPT2:
        return ({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, dict(_BYTE_LEVEL)]}, False, False)
    if pre in PRE_GPT2:
        return dict(_BYTE_LEVEL), False, False
    raise ValueError(pre)


def supported_pre_tokenizers() -> tuple[str, ...]:
    return PRE_LLAMA3 + PRE_DIGITS_GPT2 + PRE_GPT2


# ---- reading the metadata ----
def _get(meta: Mapping[str, Any], key: str, kind, default=None, *, file="<gguf>"):
    """meta[key] checked against ``kind`` (int/str/bool/list); ``default`` when absent."""
    if key not in meta:
        return default
    v = meta[key]
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is bool and isinstance(v, int) and not isinstance(v, bool):
        v, ok = bool(v), True  # some writers store flags as u8
    if not ok:
        raise PackError(file, f"metadata {key} has the wrong type ({type(v).__name__})",
                        "The GGUF file is corrupt or was written by an incompatible tool")
    return v


def check_tokenizer(meta: Mapping[str, Any], file="<gguf>") -> None:
    """Refuse, in one clear line, a tokenizer this project cannot convert (called at open time)."""
    model = _get(meta, "tokenizer.ggml.model", str, None, file=file)
    if model is None or "tokenizer.ggml.tokens" not in meta:
        raise PackError(file, "the GGUF holds no tokenizer (tokenizer.ggml.model / tokens missing)",
                        "Use a GGUF with an embedded tokenizer or an HF folder")
    if model != "gpt2":
        what = "SentencePiece (Llama-2 style)" if model == "llama" else repr(model)
        raise PackError(file, f"tokenizer model {what} is not supported; only byte-level BPE "
                        "('gpt2': Llama-3, SmolLM2) is", "Use a Llama-3-family model")
    pre = _get(meta, "tokenizer.ggml.pre", str, "default", file=file)
    if pre not in supported_pre_tokenizers():
        raise PackError(file, f"unknown pre-tokenizer {pre!r} (tokenizer.ggml.pre)",
                        "Supported: " + ", ".join(supported_pre_tokenizers()))
    tokens = _get(meta, "tokenizer.ggml.tokens", list, file=file)
    types = _get(meta, "tokenizer.ggml.token_type", list, None, file=file)
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise PackError(file, "tokenizer.ggml.tokens is empty or not a list of strings",
                        "The GGUF file is corrupt")
    if types is not None and len(types) != len(tokens):
        raise PackError(file, f"tokenizer.ggml.token_type has {len(types)} entries for "
                        f"{len(tokens)} tokens", "The GGUF file is corrupt")
    seen: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if t in seen:
            raise PackError(file, f"token {t[:40]!r} appears twice (ids {seen[t]} and {i})",
                            "A tokenizer.json vocabulary cannot hold duplicates")
        seen[t] = i
    for key in ("bos", "eos", "unknown", "padding", "eot", "eom"):
        tid = _get(meta, f"tokenizer.ggml.{key}_token_id", int, None, file=file)
        if tid is not None and not 0 <= tid < len(tokens):
            raise PackError(file, f"tokenizer.ggml.{key}_token_id {tid} is outside the "
                            f"{len(tokens)}-token vocabulary", "The GGUF file is corrupt")


def eos_token_ids(meta: Mapping[str, Any], file="<gguf>") -> list[int]:
    """End-of-generation ids as llama.cpp sees them: eos, eot, eom, then CONTROL tokens whose text
    marks an end of turn (e.g. SmolLM2's <|endoftext|>, Llama-3's <|end_of_text|>/<|eom_id|>)."""
    out: list[int] = []
    for key in ("eos", "eot", "eom"):
        tid = _get(meta, f"tokenizer.ggml.{key}_token_id", int, None, file=file)
        if tid is not None and tid not in out:
            out.append(tid)
    tokens = meta.get("tokenizer.ggml.tokens") or []
    types = meta.get("tokenizer.ggml.token_type") or [TT_NORMAL] * len(tokens)
    index = {t: i for i, t in enumerate(tokens)}
    extra = sorted(index[t] for t in EOG_TEXTS if t in index and types[index[t]] == TT_CONTROL)
    out += [i for i in extra if i not in out]
    return out


def bos_token_id(meta: Mapping[str, Any], file="<gguf>") -> int | None:
    return _get(meta, "tokenizer.ggml.bos_token_id", int, None, file=file)


# ---- building the files ----
def _added_token(tid: int, content: str, special: bool) -> dict:
    return {"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def _template(bos: str | None, eos: str | None, add_bos: bool, add_eos: bool, ids: dict) -> dict:
    """TemplateProcessing that adds BOS (and/or EOS) around each sequence, as HF's Llama-3 file."""
    def seq(name: str, type_id: int) -> list:
        out = []
        if add_bos:
            out.append({"SpecialToken": {"id": bos, "type_id": type_id}})
        out.append({"Sequence": {"id": name, "type_id": type_id}})
        if add_eos:
            out.append({"SpecialToken": {"id": eos, "type_id": type_id}})
        return out

    special = {}
    for tok, on in ((bos, add_bos), (eos, add_eos)):
        if on:
            special[tok] = {"id": tok, "ids": [ids[tok]], "tokens": [tok]}
    return {"type": "TemplateProcessing", "single": seq("A", 0), "pair": seq("A", 0) + seq("B", 1),
            "special_tokens": special}


def tokenizer_json(meta: Mapping[str, Any], file="<gguf>") -> dict:
    """The HF tokenizer.json object for the GGUF tokenizer in ``meta``."""
    check_tokenizer(meta, file)
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [TT_NORMAL] * len(tokens)
    pre_name = _get(meta, "tokenizer.ggml.pre", str, "default", file=file)
    pre, ignore_merges, add_bos_default = _pre_tokenizer(pre_name)
    add_bos = _get(meta, "tokenizer.ggml.add_bos_token", bool, add_bos_default, file=file)
    add_eos = _get(meta, "tokenizer.ggml.add_eos_token", bool, False, file=file)

    merges = []
    for k, m in enumerate(_get(meta, "tokenizer.ggml.merges", list, [], file=file)):
        pair = m.split(" ") if isinstance(m, str) else []
        if len(pair) != 2 or not all(pair):
            raise PackError(file, f"merge #{k} {str(m)[:40]!r} is not two tokens separated by "
                            "a space", "The GGUF file is corrupt")
        merges.append(pair)

    added = [_added_token(i, t, ty == TT_CONTROL)
             for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
             if ty in (TT_CONTROL, TT_USER_DEFINED)]
    ids = {t: i for i, t in enumerate(tokens)}
    bos_id = bos_token_id(meta, file)
    eos_id = _get(meta, "tokenizer.ggml.eos_token_id", int, None, file=file)
    bos = tokens[bos_id] if bos_id is not None else None
    eos = tokens[eos_id] if eos_id is not None else None
    if add_bos and bos is None:
        raise PackError(file, "add_bos_token is set but there is no tokenizer.ggml.bos_token_id",
                        "The GGUF file is inconsistent")
    if add_eos and eos is None:
        raise PackError(file, "add_eos_token is set but there is no tokenizer.ggml.eos_token_id",
                        "The GGUF file is inconsistent")

    # post-processing: byte-level offsets as HF's files do; a template only when BOS/EOS are added
    post: dict = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                  "use_regex": True}
    if add_bos or add_eos:
        post = {"type": "Sequence",
                "processors": [post, _template(bos, eos, add_bos, add_eos, ids)]}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": ids, "merges": merges},
    }


def tokenizer_config(meta: Mapping[str, Any], context_length: int | None = None,
                     file="<gguf>") -> dict:
    """HF tokenizer_config.json: special token names, add_bos/add_eos, the chat template."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [TT_NORMAL] * len(tokens)
    pre_name = _get(meta, "tokenizer.ggml.pre", str, "default", file=file)
    _, _, add_bos_default = _pre_tokenizer(pre_name)

    def name(key: str) -> str | None:
        tid = _get(meta, f"tokenizer.ggml.{key}_token_id", int, None, file=file)
        return tokens[tid] if tid is not None else None

    cfg: dict[str, Any] = {
        "add_bos_token": _get(meta, "tokenizer.ggml.add_bos_token", bool, add_bos_default,
                              file=file),
        "add_eos_token": _get(meta, "tokenizer.ggml.add_eos_token", bool, False, file=file),
        "added_tokens_decoder": {
            str(i): {k: v for k, v in _added_token(i, t, ty == TT_CONTROL).items() if k != "id"}
            for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
            if ty in (TT_CONTROL, TT_USER_DEFINED)},
        "bos_token": name("bos"),
        "eos_token": name("eos"),
        "unk_token": name("unknown"),
        "pad_token": name("padding"),
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if context_length:
        cfg["model_max_length"] = int(context_length)
    template = _get(meta, "tokenizer.chat_template", str, None, file=file)
    if template is not None:
        cfg["chat_template"] = template
    return cfg


def generation_config(meta: Mapping[str, Any], file="<gguf>") -> dict:
    """HF generation_config.json: bos, the end-of-generation ids, sampling defaults if recorded."""
    out: dict[str, Any] = {"bos_token_id": bos_token_id(meta, file),
                           "eos_token_id": eos_token_ids(meta, file)}
    pad = _get(meta, "tokenizer.ggml.padding_token_id", int, None, file=file)
    if pad is not None:
        out["pad_token_id"] = pad
    # llama.cpp's general.sampling.* keys (newer converters copy them from generation_config.json)
    for key, hf in (("temp", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        v = meta.get(f"general.sampling.{key}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[hf] = v
    if any(k in out for k in ("temperature", "top_p", "top_k")):
        out["do_sample"] = True
    return out


def tokenizer_files(meta: Mapping[str, Any], context_length: int | None = None,
                    file="<gguf>") -> dict[str, bytes]:
    """File name -> bytes for tokenizer.json, tokenizer_config.json, generation_config.json."""
    def dump(obj: dict, indent: int | None) -> bytes:
        return (json.dumps(obj, ensure_ascii=False, indent=indent) + "\n").encode("utf-8")

    return {
        "tokenizer.json": dump(tokenizer_json(meta, file), None),  # 4+ MB: no indentation
        "tokenizer_config.json": dump(tokenizer_config(meta, context_length, file), 2),
        "generation_config.json": dump(generation_config(meta, file), 2),
    }
