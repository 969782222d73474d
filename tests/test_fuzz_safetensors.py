"""Fuzz the safetensors header parser (hypothesis): any bytes give either a consistent table or
our PackError, never another exception and never a hang."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weights_tool.errors import PackError
from weights_tool.hf_load import DTYPE_SIZES, MAX_HEADER_BYTES, parse_header, read_header

FAST = settings(deadline=None, max_examples=750, suppress_health_check=list(HealthCheck),
                database=None, derandomize=True)


def _check(buf: bytes, size: int | None = None):
    size = len(buf) if size is None else size
    try:
        table = parse_header(buf, size, "fuzz.safetensors")
    except PackError as e:
        assert str(e).startswith("fuzz.safetensors: ")
        return None
    # accepted: every span is consistent and inside the file, and spans do not overlap
    n = int.from_bytes(buf[:8], "little")
    spans = []
    for name, (dtype, shape, s, e) in table.items():
        assert dtype in DTYPE_SIZES and 8 + n <= s <= e <= size
        assert e - s == math.prod(shape) * DTYPE_SIZES[dtype]
        spans.append((s, e))
    spans = sorted(x for x in spans if x[1] > x[0])
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    return table


def _file(header_obj, data_len: int, header_len=None, raw=None) -> bytes:
    h = raw if raw is not None else json.dumps(header_obj).encode()
    n = len(h) if header_len is None else header_len
    return n.to_bytes(8, "little") + h + b"\0" * data_len


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=True), st.text(max_size=8))
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4)
                        | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12)
small_int = st.one_of(st.integers(0, 70), st.integers(-5, 5), st.integers(2**62, 2**64),
                      st.booleans(), st.floats(0, 10), st.text(max_size=2))
entry = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "I8", "F64", "f32", ""]), json_leaf),
    "shape": st.one_of(st.lists(small_int, max_size=4), json_leaf),
    "data_offsets": st.one_of(st.lists(small_int, min_size=0, max_size=3), json_leaf),
}, optional={"extra": json_leaf})


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(buf):
    _check(buf)


@FAST
@given(st.dictionaries(st.text(max_size=10), st.one_of(entry, json_any), max_size=5),
       st.integers(0, 600), st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_structured_headers(header, data_len, header_len):
    _check(_file(header, data_len, header_len))


@FAST
@given(st.lists(st.tuples(st.sampled_from(sorted(DTYPE_SIZES)),
                          st.lists(st.integers(0, 6), max_size=3),
                          st.integers(0, 64)), min_size=1, max_size=5),
       st.integers(-40, 40), st.data())
def test_nearly_valid_headers(specs, data_delta, data):
    """Consistent headers, then offsets nudged and data cut: the edges of every check."""
    header, off = {}, 0
    for i, (dt, shape, gap) in enumerate(specs):
        nbytes = math.prod(shape) * DTYPE_SIZES[dt]
        start = max(0, off + data.draw(st.integers(-8, 8)))  # sometimes overlapping
        header[f"t{i}"] = {"dtype": dt, "shape": shape, "data_offsets": [start, start + nbytes]}
        off = start + nbytes + gap
    _check(_file(header, max(0, off + data_delta)))


@FAST
@given(st.binary(min_size=1, max_size=40), st.integers(0, 200))
def test_mutated_valid_file(noise, where):
    good = bytearray(_file({"__metadata__": {"format": "pt"},
                            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                            "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]}}, 32))
    pos = where % len(good)
    good[pos:pos + len(noise)] = noise
    _check(bytes(good))


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b"",
                                 b'{"a": 1, "a": 2}', b"1e999999", b'"' + b"x" * 1000])
def test_pathological(raw):
    """Deep nesting (RecursionError inside json), bad UTF-8, duplicate keys, huge numbers."""
    assert _check(_file(None, 0, raw=raw)) is None


def test_header_size_limit_and_files(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{}")
    with pytest.raises(PackError, match="over the 100 MB limit"):
        read_header(p)
    p.write_bytes(b"\x01\x02")
    with pytest.raises(PackError, match="only 2 bytes"):
        read_header(p)
    p.write_bytes(_file({"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]}}, 6))
    assert read_header(p)["a"][:2] == ("F16", (3,))
