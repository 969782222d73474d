"""Pre-tokenizers of HF ``tokenizer.json`` files (byte-level BPE family), in pure Python.

HF ``tokenizers`` splits text with Oniguruma regexes that use Unicode classes (``\\p{L}``,
``\\p{N}``, ``\\s``). Python's ``re`` has no ``\\p{..}``, and no third-party regex library may be
used (the driver runs in Pyodide), so the known split patterns are *translated*: every Unicode class
is replaced by an explicit character class built from the frozen tables in ``driver.unicode_tables``
(generated from ``unicodedata``; regenerate with ``python -m driver.pretok --write-tables``). The
rest of each pattern (alternation order, greedy quantifiers, backtracking, the ``(?!\\S)``
look-ahead) has the same leftmost-first semantics in ``re`` as in Oniguruma.

Only patterns tested against the oracle are accepted (``KNOWN_PATTERNS``); anything else is refused
with a clear error rather than silently tokenized differently. The frozen tables make CPython and
Pyodide tokenize the same text identically whatever ``unicodedata`` version the interpreter ships.

A pre-tokenizer here is a callable ``str -> list[str]`` (the pieces, in order, covering the text
exactly); the byte-level mapping (bytes -> printable chars, GPT-2's ``bytes_to_unicode``) is applied
by the tokenizer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

__all__ = [
    "TokenizerError",
    "PreTokenizeError",
    "build_pre_tokenizer",
    "translate_pattern",
    "KNOWN_PATTERNS",
    "GPT2_PATTERN",
    "LLAMA3_PATTERN",
    "BYTE_TO_CHAR",
    "CHAR_TO_BYTE",
]

PreTok = Callable[[str], list[str]]


class TokenizerError(ValueError):
    """A tokenizer.json this package cannot reproduce exactly, or bad input to it."""

    kind = "tokenizer"
    hint = "Re-pack the model with its tokenizer files, or pick another model."


PreTokenizeError = TokenizerError


# ---- the known split patterns (exact text as found in tokenizer.json) ----

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The pattern HF's ByteLevel pre-tokenizer applies itself when use_regex is true (GPT-2's).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
KNOWN_PATTERNS = {LLAMA3_PATTERN: "llama3", GPT2_PATTERN: "gpt2"}


# ---- Unicode classes as re character-class bodies ----


def _class_body(ranges: tuple[int, ...]) -> str:
    """``(a0, b0, a1, b1, ...)`` inclusive code point ranges -> inside of an ``re`` class."""
    parts = []
    for a, b in zip(ranges[0::2], ranges[1::2]):
        parts.append(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}")
    return "".join(parts)


class _Bodies(dict):
    """Class bodies built on first use (``--write-tables`` runs without the table module)."""

    def __missing__(self, key: str) -> str:
        from . import unicode_tables as ut

        self.update(
            L=_class_body(ut.LETTER),
            N=_class_body(ut.NUMBER),
            s=_class_body(ut.WHITE_SPACE),
            rust_numeric=_class_body(ut.NUMERIC_RUST),
        )
        return self[key]


_BODY = _Bodies()


def translate_pattern(pattern: str) -> str:
    """Translate an Oniguruma split pattern to Python ``re`` syntax (explicit Unicode classes).

    Handles ``\\p{L}``, ``\\p{N}``, ``\\s``, ``\\S`` inside and outside ``[...]``, and ``(?i:...)``
    groups, whose ASCII letters become ``[xX]`` classes (Oniguruma as HF builds it does not fold 'ſ'
    to 's'; ``re`` would). Any other escape except ``\\r \\n \\t`` is refused.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    fold_depth: list[bool] = []  # one entry per open group: True when it is a (?i: group
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise PreTokenizeError(f"pattern ends with a lone backslash: {pattern!r}")
            e = pattern[i + 1]
            if e == "p" and pattern[i + 2 : i + 3] == "{":
                end = pattern.find("}", i)
                name = pattern[i + 3 : end]
                if name not in ("L", "N"):
                    raise PreTokenizeError(
                        f"unsupported Unicode class \\p{{{name}}} in {pattern!r}"
                    )
                out.append(_BODY[name] if in_class else f"[{_BODY[name]}]")
                i = end + 1
                continue
            if e == "s":
                out.append(_BODY["s"] if in_class else f"[{_BODY['s']}]")
            elif e == "S":
                if in_class:
                    raise PreTokenizeError(
                        f"\\S inside a character class is not supported: {pattern!r}"
                    )
                out.append(f"[^{_BODY['s']}]")
            elif e in "rnt":
                out.append("\\" + e)
            elif e in "'\\.^$|?*+()[]{}- ":
                out.append("\\" + e)
            else:
                raise PreTokenizeError(f"unsupported escape \\{e} in {pattern!r}")
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            if pattern[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
        elif c == "(":
            if pattern.startswith("(?i:", i):
                fold_depth.append(True)
                out.append("(?:")
                i += 4
                continue
            fold_depth.append(False)
            out.append(c)
        elif c == ")":
            if fold_depth:
                fold_depth.pop()
            out.append(c)
        elif c.isascii() and c.isalpha() and any(fold_depth):
            out.append(f"[{c.lower()}{c.upper()}]")
        else:
            out.append(c)
        i += 1
    if in_class or fold_depth:
        raise PreTokenizeError(f"unbalanced pattern {pattern!r}")
    return "".join(out)


def _compile_known(pattern: str) -> re.Pattern:
    if pattern not in KNOWN_PATTERNS:
        raise PreTokenizeError(
            f"unsupported pre-tokenizer split pattern {pattern!r}: only the Llama-3 and GPT-2 "
            "patterns (tested against HF tokenizers) are known; add it to "
            "driver.pretok.KNOWN_PATTERNS with oracle tests"
        )
    return re.compile(translate_pattern(pattern))


# ---- split behaviours (HF SplitDelimiterBehavior) ----


def _splitter(rx: re.Pattern, behavior: str) -> PreTok:
    """``text -> pieces`` for one compiled regex and an HF split behaviour."""
    if behavior == "Isolated":
        findall = rx.findall

        def isolated(text: str) -> list[str]:
            pieces = findall(text)
            # Fast path: the known patterns match every character, so the matches tile the text.
            if sum(map(len, pieces)) == len(text):
                return pieces
            return _with_gaps(rx, text, "Isolated")

        return isolated
    if behavior not in ("Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"):
        raise PreTokenizeError(f"unsupported split behavior {behavior!r}")
    return lambda text: _with_gaps(rx, text, behavior)


def _with_gaps(rx: re.Pattern, text: str, behavior: str) -> list[str]:
    """General split: matches are delimiters, handled per ``behavior``; empty pieces are dropped."""
    spans: list[tuple[int, int, bool]] = []  # (start, end, is_match)
    pos = 0
    for m in rx.finditer(text):
        a, b = m.span()
        if a == b:
            continue
        if a > pos:
            spans.append((pos, a, False))
        spans.append((a, b, True))
        pos = b
    if pos < len(text):
        spans.append((pos, len(text), False))
    if behavior == "Isolated":
        return [text[a:b] for a, b, _ in spans]
    if behavior == "Removed":
        return [text[a:b] for a, b, m in spans if not m]
    if behavior == "Contiguous":
        merged: list[list] = []
        for a, b, m in spans:
            if merged and merged[-1][2] and m:
                merged[-1][1] = b
            else:
                merged.append([a, b, m])
        return [text[a:b] for a, b, _ in merged]
    # HF folds a delimiter into its neighbour piece only when that neighbour is not a delimiter
    # itself, so back-to-back delimiters (two single-space matches) stay separate pieces.
    if behavior == "MergedWithNext":
        spans.reverse()
    pieces: list[list[int]] = []
    prev_match = False
    for a, b, m in spans:
        if m and not prev_match and pieces:
            if behavior == "MergedWithPrevious":
                pieces[-1][1] = b
            else:
                pieces[-1][0] = a
        else:
            pieces.append([a, b])
        prev_match = m
    if behavior == "MergedWithNext":
        pieces.reverse()
    return [text[a:b] for a, b in pieces]


# ---- pre-tokenizer sections ----


def _chain(first: PreTok, second: PreTok) -> PreTok:
    def chained(text: str) -> list[str]:
        out: list[str] = []
        for piece in first(text):
            out.extend(second(piece))
        return out

    return chained


def _identity(text: str) -> list[str]:
    return [text] if text else []


def build_pre_tokenizer(spec: dict | None) -> tuple[PreTok, bool]:
    """The ``pre_tokenizer`` section -> (callable, saw_byte_level).

    ``saw_byte_level`` tells the caller that a ByteLevel step is present (the byte mapping is
    applied after BPE input is formed; a byte-level BPE vocabulary without it would be a different
    tokenizer).
    """
    if spec is None:
        return _identity, False
    kind = spec.get("type")
    if kind == "Sequence":
        fn, byte_level = _identity, False
        for sub in spec.get("pretokenizers", []):
            f, b = build_pre_tokenizer(sub)
            fn = f if fn is _identity else _chain(fn, f)
            byte_level = byte_level or b
        return fn, byte_level
    if kind == "Split":
        if spec.get("invert"):
            raise PreTokenizeError("Split pre-tokenizer with invert=true is not supported")
        pat = spec.get("pattern", {})
        if "Regex" in pat:
            rx = _compile_known(pat["Regex"])
        elif "String" in pat:
            rx = re.compile(re.escape(pat["String"]))
        else:
            raise PreTokenizeError(f"Split pattern must be Regex or String, got {pat!r}")
        return _splitter(rx, spec.get("behavior", "Isolated")), False
    if kind == "ByteLevel":
        fn: PreTok = _identity
        if spec.get("use_regex", True):
            fn = _splitter(_compile_known(GPT2_PATTERN), "Isolated")
        if spec.get("add_prefix_space", False):
            inner = fn

            def prefixed(text: str) -> list[str]:
                # HF prepends one space to each incoming piece that does not start with one.
                return inner(text if text.startswith(" ") else " " + text)

            fn = prefixed
        return fn, True
    if kind == "Digits":
        # HF splits on Rust's char::is_numeric (N* categories of the Rust std's Unicode version, not
        # the regex's).
        num = re.compile(
            f"[{_BODY['rust_numeric']}]" + ("" if spec.get("individual_digits") else "+")
        )
        return _splitter(num, "Isolated"), False
    raise PreTokenizeError(f"unsupported pre-tokenizer type {kind!r}")


# ---- byte-level mapping (GPT-2's bytes_to_unicode) ----


def _bytes_to_unicode() -> list[str]:
    """byte -> printable char: printable Latin-1 bytes map to themselves, the rest to U+0100+."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = [""] * 256
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


BYTE_TO_CHAR: list[str] = _bytes_to_unicode()  # (256,) byte -> char
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_CHAR)}


# ---- table generator ----

_DB_SCRIPT = """
import json, sys, importlib
u = importlib.import_module(sys.argv[1])
def ranges(pred):
    out, start = [], None
    for cp in range(0x110000):
        if pred(cp):
            if start is None:
                start = cp
        elif start is not None:
            out += [start, cp - 1]
            start = None
    return out + ([start, 0x10FFFF] if start is not None else [])
cat = u.category
print(json.dumps({"version": u.unidata_version, "L": ranges(lambda c: cat(chr(c))[0] == "L"),
                  "N": ranges(lambda c: cat(chr(c))[0] == "N")}))
"""


def _read_db(folder: str | None) -> dict:
    """L/N ranges of the ``unicodedata2`` installed in ``folder`` (or the stdlib ``unicodedata``),
    in a child
    process: two versions of the same extension module cannot share one interpreter."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=folder) if folder else None
    mod = "unicodedata2" if folder else "unicodedata"
    out = subprocess.run(
        [sys.executable, "-c", _DB_SCRIPT, mod], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise ImportError(
            f"cannot read {mod} from {folder or 'the stdlib'}: {out.stderr.strip()[-200:]}"
        )
    return json.loads(out.stdout)


def tables_source(regex_db: str | None, rust_db: str | None) -> str:
    """Source of ``driver/unicode_tables.py``.

    ``regex_db``: folder holding the ``unicodedata2`` whose L*/N* categories match the oracle's
    regex engine's ``\\p{L}``/``\\p{N}`` (HF tokenizers 0.23: Unicode 16.0, which Pyodide's Python
    3.14 also ships; CPython 3.12 ships 15.0, 5,004 fewer L/N code points). ``rust_db``: the one
    matching Rust's ``char::is_numeric``, which the Digits pre-tokenizer uses (tokenizers 0.23:
    Unicode 17.0, 13 more numeric code points than 16.0).
    """
    regex, rust = _read_db(regex_db), _read_db(rust_db)

    def fmt(name: str, values: list[int]) -> str:
        items = [f"0x{v:X}," for v in values]
        lines, line = [], "   "
        for it in items:
            if len(line) + len(it) + 1 > 100:
                lines.append(line)
                line = "   "
            line += " " + it
        lines.append(line)
        return f"{name} = (\n" + "\n".join(lines) + "\n)\n"

    # Unicode's White_Space property (PropList.txt) as (start, end) pairs: stable since Unicode 6.3;
    # what the oracle's \\s matches (str.isspace differs: it also accepts U+001C..U+001F).
    ws = [0x9, 0xD, 0x20, 0x20, 0x85, 0x85, 0xA0, 0xA0, 0x1680, 0x1680, 0x2000, 0x200A]
    ws += [0x2028, 0x2029, 0x202F, 0x202F, 0x205F, 0x205F, 0x3000, 0x3000]
    head = (
        '"""Frozen Unicode classes for the pre-tokenizer.\n\n'
        "Generated by ``python -m driver.pretok --write-tables``; do not edit. Inclusive code\n"
        "point ranges, flattened ``(start0, end0, start1, end1, ...)``.\n"
        f"LETTER / NUMBER: general categories L* / N* of Unicode {regex['version']}\n"
        "(the split regexes' \\\\p{L} / \\\\p{N}).\n"
        f"NUMERIC_RUST: N* of Unicode {rust['version']} (Rust's char::is_numeric, used by the\n"
        "Digits pre-tokenizer). WHITE_SPACE: the White_Space property.\n"
        '"""\n\n'
    )
    return (
        head
        + f'UNICODE_VERSION = "{regex["version"]}"\nRUST_UNICODE_VERSION = "{rust["version"]}"\n\n'
        + fmt("LETTER", regex["L"])
        + "\n"
        + fmt("NUMBER", regex["N"])
        + "\n"
        + fmt("NUMERIC_RUST", rust["N"])
        + "\n"
        + fmt("WHITE_SPACE", ws)
    )


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m driver.pretok", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--write-tables", action="store_true", help="regenerate driver/unicode_tables.py"
    )
    ap.add_argument(
        "--regex-db",
        metavar="DIR",
        help="folder with unicodedata2 for the regex classes (pip install --target DIR "
        "unicodedata2==16.0.0); default: this interpreter's unicodedata",
    )
    ap.add_argument(
        "--rust-db",
        metavar="DIR",
        help="folder with unicodedata2 for Rust's char::is_numeric (unicodedata2==17.0.0)",
    )
    args = ap.parse_args(argv)
    if not args.write_tables:
        ap.print_help()
        return 0
    path = Path(__file__).with_name("unicode_tables.py")
    try:
        source = tables_source(args.regex_db, args.rust_db)
    except ImportError as e:
        print(
            f"error: {e}; install it with pip install --target DIR unicodedata2==VERSION",
            file=sys.stderr,
        )
        return 2
    path.write_text(source, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
