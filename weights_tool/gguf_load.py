"""GGUF source: a llama.cpp / Ollama / LM Studio ``.gguf`` file read as a ``Source``.

The container is parsed by ``gguf_header.parse_header`` (bounded, fast; checked against
``gguf.GGUFReader`` in the tests), tensor data is memory-mapped, and every GGML block type is
decoded by the ``gguf`` package (``gguf.quants.dequantize``). Anything wrong with the file becomes
one PackError ("truncated or corrupt GGUF: ...").

Layout facts this module undoes:
  * GGUF lists dims fastest-first (ne0 = columns): a (rows, cols) HF matrix has dims [cols, rows].
  * convert_hf_to_gguf permutes the rows of q_proj / k_proj for llama.cpp's interleaved RoPE:
    ``w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)``. We apply the inverse (``unpermute_qk``) so
    rows are in HF rotate-half order. It moves whole rows, so it works on quantized rows too.
  * Q4_0 / Q4_1 / Q8_0 blocks hold 32 consecutive columns: f16 d [f16 m] then the quants
    (Q4: byte i = element i in the low nibble, element i+16 in the high nibble). ``native`` repacks
    them bit for bit into modelfmt/formats.py's u32 words, so the transcode is lossless.
  * Q4_K / Q5_K / Q6_K super-blocks (256 columns) are re-laid out by modelfmt/kquant.py, also
    bit for bit; a non-finite super-block scale is refused there (one PackError naming the
    tensor, row and super-block), both for the copy and before dequantizing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelfmt.config import ConfigError, ModelConfig, RopeScaling
from modelfmt.formats import GGUF_TO_CANON, canon_name, expected_tensors

from . import gguf_tokenizer
from .errors import PackError
from .gguf_header import HeaderError, TensorInfo, parse_header
from .source import Source, SourceTensor, check_tensor_set

CORRUPT_HINT = "Re-download the file; it must be a complete GGUF v2/v3 model"


# ---- Q/K row permutation (convert_hf_to_gguf's ``permute``) ----
def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows -> llama.cpp's interleaved rows (what convert_hf_to_gguf does)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Exact inverse of ``permute_qk``: GGUF rows -> HF rows. Works on any per-row array."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- lossless repacking into modelfmt/formats.py layouts ----
_CHUNK_ELEMS = 2 * 1024 * 1024  # elements per row chunk when decoding / repacking (8 MB of f32)
_NATIVE = {"Q4_0": "q4_0", "Q4_1": "q4_1", "Q8_0": "q8_0", "F16": "f16", "F32": "f32",
           "Q4_K": "q4_k", "Q5_K": "q5_k", "Q6_K": "q6_k"}
_KQUANT = {"Q4_K": "q4_k", "Q5_K": "q5_k", "Q6_K": "q6_k"}


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
    qs = np.ascontiguousarray(packed).reshape(rows, cols // 2).view("<u4")  # (rows, cols/8)
    out = {"qs": qs,
           "scales": _f16_bits(blocks[..., 0:2])}               # (rows, nb)
    if src_dtype == "Q4_1":
        out["mins"] = _f16_bits(blocks[..., 2:4])               # (rows, nb)
    return out


# ---- the tensor ----
class GGUFTensor(SourceTensor):
    """One GGUF tensor, decoded lazily from the memory map (nothing is read until asked)."""

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

    def _chunks(self):
        """Row ranges of ~8 MB of f32 output: temporaries stay small whatever the tensor size."""
        rows = self.shape[0]
        step = max(1, _CHUNK_ELEMS // max(1, math.prod(self.shape[1:])))
        return [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]

    def _kquant_error(self, e) -> PackError:
        return PackError(self._file, f"tensor {self.src_name!r} ({self.src_dtype}): {e}",
                         CORRUPT_HINT)

    def load_f32(self) -> np.ndarray:
        import gguf

        from modelfmt import kquant
        out = np.empty(self.shape, np.float32)  # (rows, cols) or (n,)
        kq = _KQUANT.get(self.src_dtype) if len(self.shape) == 2 else None
        try:
            if len(self.shape) == 1:
                out[:] = gguf.quants.dequantize(np.asarray(self._data), self._qtype)
            else:
                for r0, r1 in self._chunks():
                    raw = np.asarray(self._data[r0:r1])
                    if kq:   # refuse a non-finite super-block scale before it becomes NaNs
                        kquant.check_gguf(raw, kq, r1 - r0, self.shape[1], r0)
                    out[r0:r1] = gguf.quants.dequantize(raw, self._qtype)
        except NotImplementedError:
            raise PackError(self._file, f"tensor {self.src_name!r} has type {self.src_dtype}, "
                            "which the gguf package cannot dequantize",
                            "Requantize it with llama.cpp to Q4_K/Q8_0/F16") from None
        except kquant.KQuantError as e:
            raise self._kquant_error(e) from None
        return np.ascontiguousarray(self._rows(out))

    def native(self, fmt: str, group_size: int = 32):
        if _NATIVE.get(self.src_dtype) != fmt:
            return None
        if fmt in ("f32", "f16"):
            data = np.asarray(self._data)
            data = data.view("<u2") if fmt == "f16" else data.astype("<f4", copy=False)
            return {"data": np.ascontiguousarray(self._rows(data.reshape(self.shape)))}
        kq = self.src_dtype in _KQUANT
        if len(self.shape) != 2 or (group_size != 32 and not kq):
            return None  # GGUF blocks are 32 wide: another group size cannot be a copy
        from modelfmt import kquant
        rows, cols = self.shape
        out: dict[str, np.ndarray] = {}
        for r0, r1 in self._chunks():
            raw = np.asarray(self._data[r0:r1])
            try:
                parts = (kquant.gguf_to_parts(raw, fmt, r1 - r0, cols, r0) if kq
                         else repack_blocks(raw, self.src_dtype, r1 - r0, cols))
            except kquant.KQuantError as e:
                raise self._kquant_error(e) from None
            for k, v in parts.items():
                if k not in out:
                    # qs (rows, cols/8) or (rows, cols/4); scales / mins (rows, nb)
                    out[k] = np.empty((rows, v.shape[1]), v.dtype)
                out[k][r0:r1] = v
        return {k: np.ascontiguousarray(self._rows(v)) for k, v in out.items()}


# ---- the source ----
def _stem_name(path: Path) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'smollm2-135m-instruct' (quant suffix dropped)."""
    stem = path.stem
    stem = re.sub(r"[.\-_](I?Q\d[\w]*|F16|F32|BF16|f16|f32|bf16)$", "", stem)
    return re.sub(r"[^a-z0-9.\-]+", "-", stem.lower()).strip("-.") or "model"


class GGUFSource(Source):
    """A llama GGUF: ``config`` from its metadata, ``tensors()`` in HF layout, HF tokenizer files.

    ``meta`` holds every metadata value; ``header`` the parsed container (tensor table, offsets).
    """

    kind = "gguf"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = _stem_name(self.path)
        self._map = None
        self._tensors = []
        try:
            size = self.path.stat().st_size
            if size == 0:
                raise HeaderError("the file is empty")
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")  # (size,) u8, read-only
            header = parse_header(self._map, size)
        except HeaderError as e:
            self.close()
            raise PackError(self.path, f"truncated or corrupt GGUF: {e}", CORRUPT_HINT) from None
        except OSError as e:
            self.close()
            raise PackError(self.path, f"cannot read the file ({e.strerror or e})",
                            "Check the path and permissions") from None
        self.meta = header.meta
        self.header = header
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
        if layers > len(self.header.tensors):  # guards the per-layer tables built below
            raise PackError(self.path, f"llama.block_count is {layers} but the file holds only "
                            f"{len(self.header.tensors)} tensors", "The GGUF is inconsistent")
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
            shape = tuple(reversed(t.dims))  # HF order: (rows, cols)
            if n_head and (len(shape) != 2 or shape[0] % (2 * n_head)):
                raise PackError(self.path, f"tensor {t.name!r} has shape {list(shape)}, which does "
                                f"not split into {n_head} heads", "The GGUF is inconsistent")
            qtype, data = self._view(t)
            by_canon[canon] = GGUFTensor(canon, t.name, qtype, data, shape, n_head, self.path)
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

    def _view(self, t: TensorInfo):
        """(GGML type, memory-mapped data): typed (rows, cols) for F32/F16, else u8 block rows
        (rows, bytes per row), the form ``gguf.quants.dequantize`` takes."""
        import gguf

        qtype = gguf.GGMLQuantizationType(t.ggml_type)
        flat = self._map[t.offset:t.offset + t.nbytes]          # (nbytes,) u8
        shape = tuple(reversed(t.dims))
        if qtype == gguf.GGMLQuantizationType.F32:
            return qtype, flat.view("<f4").reshape(shape)
        if qtype == gguf.GGMLQuantizationType.F16:
            return qtype, flat.view("<f2").reshape(shape)
        return qtype, flat.reshape(*shape[:-1], -1)

    def _tensor_infos(self) -> dict:
        """Canonical name -> TensorInfo; refuses unknown tensors and undecodable types."""
        import gguf

        decodable = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                     *gguf.quants._type_traits}
        out: dict[str, Any] = {"_names": set(), "_canon": {}}
        for t in self.header.tensors:
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
            if t.ggml_type not in decodable:
                name = gguf.GGMLQuantizationType(t.ggml_type).name
                raise PackError(self.path, f"tensor {t.name!r} has type {name}, which cannot be "
                                "decoded", "Use F32/F16/BF16/Q4_0/Q4_1/Q8_0/K-quant files")
            if len(t.dims) > 2:
                raise PackError(self.path, f"tensor {t.name!r} has {len(t.dims)} dimensions",
                                "Only dense 2-D weights are supported (no MoE)")
            out["_canon"][canon] = t
        return out

    def _rope_scaling(self, t, theta: float, head_dim: int) -> RopeScaling | None:
        """llama3 scaling from the per-pair divisors llama.cpp stores in rope_freqs.weight."""
        import gguf

        qtype, data = self._view(t)
        try:
            factors = np.asarray(gguf.quants.dequantize(np.asarray(data), qtype),
                                 dtype=np.float64).reshape(-1)
        except (NotImplementedError, ValueError):
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
        # Dropping our references unmaps the file once no tensor view handed out is alive.
        self._map = None
        self._tensors = []


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
