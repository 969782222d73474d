"""Fuzz the GGUF header parsing: mutated bytes of a small valid GGUF give PackError or a working
source, never another exception and never a hang (hypothesis, deterministic, a few thousand cases;
``pytest --full`` or env FUZZ_FULL=1 runs ten times more).

A mutation that survives opening must also survive what the packer does next: building the
tokenizer files and reading tensors. Differential check: whenever our header parser accepts the
bytes, ``gguf.GGUFReader`` must read the same metadata and tensor table from them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import gguf
import pytest
from _gguf_make import Q, make_gguf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weights_tool.errors import PackError
from weights_tool.gguf_header import HeaderError, parse_header
from weights_tool.gguf_load import GGUFSource

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-gguf-"))
atexit.register(shutil.rmtree, _DIR, True)
_BASE = _DIR / "base.gguf"
make_gguf(_BASE, hidden=32, ffn=32, layers=1, heads=2, kv_heads=1, qtype=Q.Q4_1)
DATA = _BASE.read_bytes()
HEADER_END = parse_header(DATA, len(DATA)).data_offset
# values that stress counts, lengths, types and offsets when written over 1, 4 or 8 bytes
EDGE = [0, 1, 2, 3, 7, 8, 9, 12, 13, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
        2 ** 40, 2 ** 63 - 1, 2 ** 64 - 1, len(DATA), HEADER_END]

_EXAMPLES = 2000 * (10 if os.environ.get("FUZZ_FULL") or "--full" in sys.argv else 1)

mutation = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, HEADER_END + 64), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.integers(0, HEADER_END), st.sampled_from(EDGE)),
    st.tuples(st.just("u64"), st.integers(0, HEADER_END), st.sampled_from(EDGE)),
    st.tuples(st.just("cut"), st.integers(0, len(DATA)), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, HEADER_END), st.integers(0, 255)),
)


def mutate(data: bytes, muts) -> bytes:
    b = bytearray(data)
    for kind, pos, val in muts:
        pos = min(pos, len(b))
        if kind == "byte" and pos < len(b):
            b[pos] = val
        elif kind == "u32":
            b[pos:pos + 4] = struct.pack("<I", val & 0xFFFFFFFF)
        elif kind == "u64":
            b[pos:pos + 8] = struct.pack("<Q", val & (2 ** 64 - 1))
        elif kind == "cut":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = bytes([val])
    return bytes(b)


def exercise(path: Path) -> str:
    try:
        with GGUFSource(path) as src:
            src.tokenizer_files()
            for i, t in enumerate(src.tensors()):
                if i < 3:
                    t.load_f32()
                    t.native("q4_1")
        return "ok"
    except PackError:
        return "packerror"


@pytest.mark.parametrize("seed_case", ["valid"])
def test_base_file_is_valid(seed_case):
    assert exercise(_BASE) == "ok"


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NaN from mutated scales
@settings(max_examples=_EXAMPLES, deadline=3000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_headers_give_packerror_or_success(muts):
    p = _DIR / "m.gguf"
    data = mutate(DATA, muts)
    p.write_bytes(data)
    assert exercise(p) in ("ok", "packerror")
    try:
        h = parse_header(data, len(data))
    except HeaderError:
        return
    r = gguf.GGUFReader(p)
    assert h.meta == {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert [(t.name, t.dims, t.ggml_type, t.offset) for t in h.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), t.data_offset)
        for t in r.tensors]
