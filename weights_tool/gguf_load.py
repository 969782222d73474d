"""GGUF source: a llama.cpp / Ollama / LM Studio ``.gguf`` file read as a ``Source``.

Reading is done by the ``gguf`` package (``GGUFReader``, memory-mapped), after our own header walk
(``check_header``) has proved every count and length fits in the file: gguf trusts the header, and a
corrupt count would make it loop for hours or allocate without bound. Any other failure while
parsing is reported as "truncated or corrupt GGUF".

Layout facts this module undoes:
  * GGUF lists dims fastest-first (ne0 = columns): a (rows, cols) HF matrix has dims [cols, rows].
  * convert_hf_to_gguf permutes the rows of q_proj / k_proj for llama.cpp's interleaved RoPE:
    ``w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)``. We apply the inverse (``unpermute_qk``) so
    rows are in HF rotate-half order. It moves whole rows, so it works on quantized rows too.
  * Q4_0 / Q4_1 / Q8_0 blocks hold 32 consecutive columns: f16 d [f16 m] then the quants
    (Q4: byte i = element i in the low nibble, element i+16 in the high nibble). ``native`` repacks
    them bit for bit into driver/formats.py's u32 words, so the transcode is lossless.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from driver.config import ConfigError, ModelConfig, RopeScaling
from driver.formats import GGUF_TO_CANON, canon_name, expected_tensors

from . import gguf_tokenizer
from .errors import PackError
from .source import Source, SourceTensor, check_tensor_set

CORRUPT_HINT = "Re-download the file; it must be a complete GGUF v2/v3 model"

# ---- header walk (before gguf sees the file) ----
# GGUF value types: id -> fixed byte size (None: string / array)
_VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: None, 9: None, 10: 8, 11: 8, 12: 8}
_MAX_DIMS = 4          # GGML_MAX_DIMS
_MAX_ARRAY_DEPTH = 2   # arrays of arrays exist in the spec; deeper nesting is never written


class _Corrupt(Exception):
    pass


def _header_types():
    import gguf  # lazy: importing gguf costs ~0.3 s

    return gguf.GGML_QUANT_SIZES, gguf.GGMLQuantizationType


def check_header(buf, size: int) -> dict:
    """Walk the GGUF header in ``buf`` (bytes-like of ``size`` bytes) with bounds on every count.

    Returns {"version", "n_tensors", "n_kv", "data_offset"}. Raises _Corrupt with the reason.
    Every claimed count is checked against the bytes left before anything is looped over, so a
    mutated header costs O(file size) at most.
    """
    sizes, qtypes = _header_types()
    if size < 24:
        raise _Corrupt(f"file is {size} bytes, shorter than a GGUF header (24)")
    if bytes(buf[0:4]) != b"GGUF":
        raise _Corrupt("bad magic (not a GGUF file)")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version not in (2, 3):
        if version & 0xFFFF == 0 and (version >> 16) in (2, 3):
            raise _Corrupt("big-endian GGUF files are not supported")
        raise _Corrupt(f"unsupported GGUF version {version} (need 2 or 3)")
    pos = 24
    if n_kv > (size - pos) // 13:          # key len (8) + >=1 byte + type (4)
        raise _Corrupt(f"metadata count {n_kv} does not fit in a {size}-byte file")
    if n_tensors > (size - pos) // 24:     # name len (8) + n_dims (4) + type (4) + offset (8)
        raise _Corrupt(f"tensor count {n_tensors} does not fit in a {size}-byte file")

    def need(n: int, what: str) -> None:
        if n < 0 or pos + n > size:
            raise _Corrupt(f"{what} runs past the end of the file (offset {pos}, needs {n} bytes)")

    def read_str(what: str) -> bytes:
        nonlocal pos
        need(8, what)
        (n,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        need(n, what)
        s = bytes(buf[pos:pos + n])
        pos += n
        return s

    def skip_value(vtype: int, what: str, depth: int = 0) -> Any:
        nonlocal pos
        if vtype not in _VALUE_SIZES:
            raise _Corrupt(f"{what}: unknown value type {vtype}")
        fixed = _VALUE_SIZES[vtype]
        if fixed is not None:
            need(fixed, what)
            v = buf[pos:pos + fixed]
            pos += fixed
            return v
        if vtype == 8:
            read_str(what)
            return None
        need(12, what)
        itype, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if itype not in _VALUE_SIZES:
            raise _Corrupt(f"{what}: unknown array item type {itype}")
        if itype == 9 and depth + 1 >= _MAX_ARRAY_DEPTH:
            raise _Corrupt(f"{what}: arrays nested too deep")
        item = _VALUE_SIZES[itype] or (8 if itype == 8 else 12)  # smallest possible item
        if count > (size - pos) // item:
            raise _Corrupt(f"{what}: array of {count} items does not fit in the file")
        if _VALUE_SIZES[itype] is not None:
            pos += count * item
        else:
            for _ in range(count):
                skip_value(itype, what, depth + 1)
        return None

    alignment = 32
    keys = set()
    for k in range(n_kv):
        key = read_str(f"metadata key #{k}")
        if key in keys:
            raise _Corrupt(f"metadata key {key[:60]!r} appears twice")
        keys.add(key)
        need(4, f"metadata {key[:60]!r}")
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        raw = skip_value(vtype, f"metadata {key[:60]!r}")
        if key == b"general.alignment":
            if vtype != 4:
                raise _Corrupt("general.alignment must be a uint32")
            (alignment,) = struct.unpack_from("<I", raw)
            if alignment == 0 or alignment & (alignment - 1):
                raise _Corrupt(f"general.alignment {alignment} is not a power of two")

    tensors = []
    names = set()
    for t in range(n_tensors):
        name = read_str(f"tensor #{t} name")
        if name in names:
            raise _Corrupt(f"tensor {name[:60]!r} appears twice")
        names.add(name)
        need(4, f"tensor {name[:60]!r}")
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Corrupt(f"tensor {name[:60]!r} has {n_dims} dimensions")
        need(8 * n_dims + 12, f"tensor {name[:60]!r}")
        dims = struct.unpack_from(f"<{n_dims}Q", buf, pos)
        pos += 8 * n_dims
        ttype, offset = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if any(d == 0 or d > 1 << 40 for d in dims) or math.prod(dims) > 1 << 42:
            raise _Corrupt(f"tensor {name[:60]!r} has impossible dimensions {list(dims)}")
        try:
            block, type_size = sizes[qtypes(ttype)]
        except (ValueError, KeyError):
            raise _Corrupt(f"tensor {name[:60]!r} has unknown type {ttype}") from None
        if dims[0] % block:
            raise _Corrupt(f"tensor {name[:60]!r}: {dims[0]} columns are not a multiple of "
                           f"its block size {block}")
        tensors.append((name, offset, math.prod(dims) // block * type_size))
    data_offset = pos + (-pos) % alignment
    for name, offset, nbytes in tensors:
        if offset % alignment:
            raise _Corrupt(f"tensor {name[:60]!r} data offset {offset} is not aligned to {alignment}")
        if data_offset + offset + nbytes > size:
            raise _Corrupt(f"tensor {name[:60]!r} data ({nbytes} bytes at {data_offset + offset}) "
                           f"runs past the end of the {size}-byte file")
    return {"version": version, "n_tensors": n_tensors, "n_kv": n_kv, "data_offset": data_offset}


# ---- Q/K row permutation (convert_hf_to_gguf's ``permute``) ----
def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows -> llama.cpp's interleaved rows (what convert_hf_to_gguf does)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Exact inverse of ``permute_qk``: GGUF rows -> HF rows. Works on any per-row array."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- lossless repacking into driver/formats.py layouts ----
_NATIVE = {"Q4_0": "q4_0", "Q4_1": "q4_1", "Q8_0": "q8_0", "F16": "f16", "F32": "f32"}


def _f16_bits(b: np.ndarray) -> np.ndarray:
    """uint8 (..., 2) little-endian halves -> uint16 (...)."""
    return np.ascontiguousarray(b).view("<u2")[..., 0]


def repack_blocks(raw: np.ndarray, src_dtype: str, rows: int, cols: int) -> dict[str, np.ndarray]:
    """GGUF block bytes (rows, bytes_per_row) -> our parts (see SourceTensor.native)."""
    nb = cols // 32
    if src_dtype == "Q8_0":
        blocks = raw.reshape(rows, nb, 34)                      # (rows, nb, 2 + 32)
        qs = np.ascontiguousarray(blocks[..., 2:]).reshape(rows, cols)
        return {"qs": qs.view("<u4"),                           # (rows, cols/4): byte j = col 4w+j
                "scales": _f16_bits(blocks[..., 0:2])}          # (rows, nb) f16 bits
    head = 4 if src_dtype == "Q4_1" else 2
    blocks = raw.reshape(rows, nb, head + 16)                   # (rows, nb, head + 16)
    q = blocks[..., head:]                                      # (rows, nb, 16) two nibbles each
    nib = np.concatenate([q & 0x0F, q >> 4], axis=-1)           # (rows, nb, 32): element order
    packed = (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)  # byte k = cols 2k, 2k+1
    out = {"qs": np.ascontiguousarray(packed).reshape(rows, cols // 2).view("<u4"),  # (rows, cols/8)
           "scales": _f16_bits(blocks[..., 0:2])}               # (rows, nb)
    if src_dtype == "Q4_1":
        out["mins"] = _f16_bits(blocks[..., 2:4])               # (rows, nb)
    return out


# ---- the tensor ----
class GGUFTensor(SourceTensor):
    def __init__(self, canon: str, src_name: str, qtype, data: np.ndarray,
                 shape: tuple[int, ...], n_head: int | None, file: Path) -> None:
        self.canon = canon
        self.src_name = src_name
        self.shape = shape
        self.src_dtype = qtype.name
        self._qtype = qtype
        self._data = data          # memmap view: (rows, bytes_per_row) u8, or typed (rows, cols)
        self._n_head = n_head      # set for Q/K: rows get un-permuted
        self._file = file

    def _rows(self, a: np.ndarray) -> np.ndarray:
        return unpermute_qk(a, self._n_head) if self._n_head else a

    def load_f32(self) -> np.ndarray:
        import gguf

        try:
            w = gguf.quants.dequantize(np.asarray(self._data), self._qtype)
        except NotImplementedError:
            raise PackError(self._file, f"tensor {self.src_name!r} has type {self.src_dtype}, which "
                            "the gguf package cannot dequantize",
                            "Requantize it with llama.cpp to Q4_K/Q8_0/F16") from None
        w = np.asarray(w, dtype=np.float32).reshape(self.shape)
        return np.ascontiguousarray(self._rows(w))

    def native(self, fmt: str, group_size: int = 32):
        if _NATIVE.get(self.src_dtype) != fmt:
            return None
        if fmt in ("f32", "f16"):
            data = np.asarray(self._data)
            data = data.view("<u2") if fmt == "f16" else data.astype("<f4", copy=False)
            return {"data": np.ascontiguousarray(self._rows(data.reshape(self.shape)))}
        if group_size != 32 or len(self.shape) != 2:
            return None  # GGUF blocks are 32 wide: another group size cannot be a copy
        rows, cols = self.shape
        parts = repack_blocks(np.asarray(self._data), self.src_dtype, rows, cols)
        return {k: np.ascontiguousarray(self._rows(v)) for k, v in parts.items()}


# ---- the source ----
def _stem_name(path: Path) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'smollm2-135m-instruct' (quant suffix dropped)."""
    stem = path.stem
    stem = re.sub(r"[.\-_](I?Q\d[\w]*|F16|F32|BF16|f16|f32|bf16)$", "", stem)
    return re.sub(r"[^a-z0-9.\-]+", "-", stem.lower()).strip("-.") or "model"


class GGUFSource(Source):
    kind = "gguf"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = _stem_name(self.path)
        self._reader = None
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                if size == 0:
                    raise _Corrupt("the file is empty")
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    check_header(mm, size)
        except _Corrupt as e:
            raise PackError(self.path, f"truncated or corrupt GGUF: {e}", CORRUPT_HINT) from None
        except OSError as e:
            raise PackError(self.path, f"cannot read the file ({e.strerror or e})",
                            "Check the path and permissions") from None
        try:
            import gguf

            self._reader = gguf.GGUFReader(self.path, "r")
            self.meta = {k: f.contents() for k, f in self._reader.fields.items()}
        except Exception as e:  # anything gguf raises on a bad file is the file's fault
            self.close()
            raise PackError(self.path, f"truncated or corrupt GGUF: {type(e).__name__}: "
                            f"{str(e)[:200]}", CORRUPT_HINT) from None
        try:
            self._open()
        except Exception:
            self.close()
            raise

    # -- metadata helpers --
    def _kv(self, key: str, kind, default: Any = ..., *, positive: bool = False):
        if key not in self.meta:
            if default is ...:
                raise PackError(self.path, f"metadata {key} is missing",
                                "The GGUF does not describe a complete llama model")
            return default
        v = self.meta[key]
        if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            # GGUF stores f32: take the shortest decimal that rounds to it (1e-05, not 9.99e-06)
            with np.errstate(over="ignore"):
                f32 = np.float32(v)
            v = float(str(f32)) if np.isfinite(f32) and float(f32) == float(v) else float(v)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise PackError(self.path, f"metadata {key} has the wrong type "
                            f"({type(v).__name__}, expected {kind.__name__})", CORRUPT_HINT)
        if positive and not v > 0:
            raise PackError(self.path, f"metadata {key} must be positive, got {v}", CORRUPT_HINT)
        return v

    def _open(self) -> None:
        arch = self._kv("general.architecture", str, None)
        if arch != "llama":
            raise PackError(self.path, f"unsupported architecture {arch!r} (general.architecture)",
                            "Only 'llama' GGUFs (Llama-2/3/3.1/3.2, SmolLM2) are supported")
        a = "llama."
        if self._kv(a + "expert_count", int, 0):
            raise PackError(self.path, "mixture-of-experts models (llama.expert_count) are not "
                            "supported", "Use a dense Llama-3-family model")
        for key in (a + "attention.sliding_window", a + "attention.clamp_kqv"):
            if self.meta.get(key):
                raise PackError(self.path, f"{key} is not supported", "Use a Llama-3-family model")
        gguf_tokenizer.check_tokenizer(self.meta, self.path)

        hidden = self._kv(a + "embedding_length", int, positive=True)
        heads = self._kv(a + "attention.head_count", int, positive=True)
        kv_heads = self._kv(a + "attention.head_count_kv", int, heads, positive=True)
        head_dim = self._kv(a + "attention.key_length", int, hidden // heads if hidden % heads == 0
                            else 0)
        if self._kv(a + "attention.value_length", int, head_dim) != head_dim:
            raise PackError(self.path, "attention.value_length differs from key_length",
                            "Only Llama attention (equal K/V head sizes) is supported")
        rot = self._kv(a + "rope.dimension_count", int, head_dim)
        if rot != head_dim:
            raise PackError(self.path, f"partial rotary embedding (rope.dimension_count {rot} of "
                            f"head size {head_dim}) is not supported", "Use a Llama-3-family model")
        theta = self._kv(a + "rope.freq_base", float, 10000.0, positive=True)
        tokens = self.meta["tokenizer.ggml.tokens"]
        vocab = self._kv(a + "vocab_size", int, len(tokens), positive=True)

        infos = self._tensor_infos()
        layers = self._kv(a + "block_count", int, positive=True)
        if layers > len(self._reader.tensors):  # guards the per-layer tables built below
            raise PackError(self.path, f"llama.block_count is {layers} but the file holds only "
                            f"{len(self._reader.tensors)} tensors", "The GGUF is inconsistent")
        if "rope_freqs" in infos:
            scaling = self._rope_scaling(infos["rope_freqs"], theta, head_dim)
        else:
            rtype = self._kv(a + "rope.scaling.type", str, "none")
            if rtype != "none":
                raise PackError(self.path, f"rope scaling type {rtype!r} is not supported",
                                "Only llama3-style scaling (rope_freqs.weight) or none is")
            scaling = None
        try:
            self.config = ModelConfig(
                vocab_size=vocab,
                hidden_size=hidden,
                intermediate_size=self._kv(a + "feed_forward_length", int, positive=True),
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                rms_norm_eps=self._kv(a + "attention.layer_norm_rms_epsilon", float, 1e-5),
                rope_theta=theta,
                max_position_embeddings=self._kv(a + "context_length", int, positive=True),
                tie_word_embeddings="output.weight" not in infos["_names"],
                rope_scaling=scaling,
                bos_token_id=gguf_tokenizer.bos_token_id(self.meta, self.path),
                eos_token_id=tuple(gguf_tokenizer.eos_token_ids(self.meta, self.path)),
            )
        except ConfigError as e:
            raise PackError(self.path, f"unsupported model configuration: {e}",
                            "Use a Llama-3-family model") from None

        by_canon: dict[str, GGUFTensor] = {}
        for canon, t in infos["_canon"].items():
            n_head = None
            if canon.endswith("attention.wq"):
                n_head = heads
            elif canon.endswith("attention.wk"):
                n_head = kv_heads
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            if n_head and (len(shape) != 2 or shape[0] % (2 * n_head)):
                raise PackError(self.path, f"tensor {t.name!r} has shape {list(shape)}, which does "
                                f"not split into {n_head} heads", "The GGUF is inconsistent")
            by_canon[canon] = GGUFTensor(canon, t.name, t.tensor_type, t.data, shape, n_head,
                                         self.path)
        want = expected_tensors(self.config)
        for canon, t in by_canon.items():  # said here in GGUF terms before the generic check
            if canon not in want:
                raise PackError(self.path, f"unexpected tensor {t.src_name!r} for a "
                                f"{self.config.num_hidden_layers}-layer model (llama.block_count)",
                                "The GGUF is inconsistent")
            if t.shape != want[canon]:
                raise PackError(self.path, f"tensor {t.src_name!r} has shape {list(t.shape)} but "
                                f"the GGUF metadata implies {list(want[canon])}",
                                "The GGUF is inconsistent")
        check_tensor_set(self.path, self.config, {k: v.shape for k, v in by_canon.items()},
                         {k: v.src_name for k, v in by_canon.items()})
        self._tensors = [by_canon[k] for k in sorted(by_canon, key=_order)]

    def _tensor_infos(self) -> dict:
        """Canonical name -> ReaderTensor; refuses unknown tensors and undecodable types."""
        import gguf

        decodable = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                     *gguf.quants._type_traits}
        out: dict[str, Any] = {"_names": set(), "_canon": {}}
        for t in self._reader.tensors:
            out["_names"].add(t.name)
            canon = canon_name(t.name, GGUF_TO_CANON)
            if t.name == "rope_freqs.weight":
                out["rope_freqs"] = t
                continue
            if canon is False:
                raise PackError(self.path, f"unknown tensor {t.name[:100]!r}",
                                "Only Llama weights without biases are supported")
            if canon is None:
                continue
            if t.tensor_type not in decodable:
                raise PackError(self.path, f"tensor {t.name!r} has type {t.tensor_type.name}, which "
                                "cannot be decoded", "Use F32/F16/BF16/Q4_0/Q4_1/Q8_0/K-quant files")
            if len(t.shape) > 2:
                raise PackError(self.path, f"tensor {t.name!r} has {len(t.shape)} dimensions",
                                "Only dense 2-D weights are supported (no MoE)")
            out["_canon"][canon] = t
        return out

    def _rope_scaling(self, t, theta: float, head_dim: int) -> RopeScaling | None:
        """llama3 scaling from the per-pair divisors llama.cpp stores in rope_freqs.weight."""
        import gguf

        try:
            factors = np.asarray(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type),
                                 dtype=np.float64).reshape(-1)
        except NotImplementedError:
            factors = np.zeros(0)
        orig = self._kv("llama.rope.scaling.original_context_length", int, 8192, positive=True)
        rs = derive_llama3_scaling(factors, theta, head_dim, orig)
        if rs is False:
            raise PackError(self.path, "rope_freqs.weight does not match llama3-style rope scaling",
                            "Only llama3 rope scaling (Llama-3.1/3.2) is supported")
        return rs

    # -- Source API --
    def tensors(self) -> Iterator[SourceTensor]:
        return iter(self._tensors)

    def tokenizer_files(self) -> dict[str, bytes]:
        return gguf_tokenizer.tokenizer_files(self.meta, self.config.max_position_embeddings,
                                              self.path)

    def close(self) -> None:
        r, self._reader = self._reader, None
        self._tensors = []
        if r is not None:
            mm = getattr(r.data, "_mmap", None)
            del r
            if mm is not None:
                try:
                    mm.close()
                except (BufferError, ValueError):
                    pass  # a tensor view still alive keeps the map; it closes with it


def _order(canon: str) -> tuple:
    """Stream order: embeddings, layers in order, final norm, output."""
    if canon.startswith("layers."):
        return (1, int(canon.split(".")[1]), canon)
    return ({"tok_embeddings": 0, "norm": 2, "output": 3}.get(canon, 4), 0, canon)


# ---- llama3 rope scaling from rope_freqs ----
def llama3_factors(theta: float, head_dim: int, rs: RopeScaling) -> np.ndarray:
    """The divisors convert_hf_to_gguf writes to rope_freqs.weight for llama3 scaling."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / inv
    low_wl = rs.original_max_position_embeddings / rs.low_freq_factor
    high_wl = rs.original_max_position_embeddings / rs.high_freq_factor
    smooth = ((rs.original_max_position_embeddings / wavelen - rs.low_freq_factor)
              / (rs.high_freq_factor - rs.low_freq_factor))
    mid = 1.0 / ((1 - smooth) / rs.factor + smooth)
    return np.where(wavelen < high_wl, 1.0, np.where(wavelen > low_wl, rs.factor, mid))


def derive_llama3_scaling(factors: np.ndarray, theta: float, head_dim: int,
                          orig: int = 8192) -> RopeScaling | None | bool:
    """Recover (factor, low_freq_factor, high_freq_factor) from stored divisors.

    The divisors only fix orig/(high-low) and low/(high-low) (the maths is invariant when all three
    scale together), so ``orig`` (GGUF's original_context_length, else Llama-3's 8192) pins them.
    Returns None for all-ones divisors (no scaling), False when no llama3 setting reproduces them.
    """
    if factors.shape != (head_dim // 2,) or not np.isfinite(factors).all() or (factors <= 0).any():
        return False
    if np.allclose(factors, 1.0, rtol=0, atol=1e-6):
        return None
    factor = float(factors.max())
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    u = inv / (2 * math.pi)                                    # 1 / wavelength
    mid = (factors > 1 + 1e-5) & (factors < factor * (1 - 1e-5))
    candidates = [(1.0, 4.0)]                                  # Llama-3.1/3.2's published values
    if mid.sum() >= 2:
        s = (1 / factors[mid] - 1 / factor) / (1 - 1 / factor)  # smooth, linear in u
        slope, icpt = np.polyfit(u[mid], s, 1)                 # s = orig/(h-l) * u - l/(h-l)
        if slope > 0:
            span = orig / slope
            low = -icpt * span
            candidates.insert(0, (round(low, 4), round(low + span, 4)))
    for low, high in candidates:
        if not 0 < low < high:
            continue
        rs = RopeScaling(factor=round(factor, 4), low_freq_factor=low, high_freq_factor=high,
                         original_max_position_embeddings=int(orig))
        if np.allclose(llama3_factors(theta, head_dim, rs), factors, rtol=1e-4, atol=1e-5):
            return rs
    return False
