"""Hugging Face folder source: config.json + *.safetensors (+ model.safetensors.index.json).

The safetensors header is parsed here, strictly, rather than trusted to a library: an 8-byte
little-endian length, then that many bytes of JSON mapping tensor name -> {dtype, shape,
data_offsets}. Every way a header can lie (size, JSON, dtype, shape/offset mismatch, offsets past
the end, overlaps, duplicate keys) becomes a PackError naming the file.

Tensor data is read with plain file reads into one float32 array rather than through np.memmap:
mmap'd file pages count towards the process RSS, so converting a 1 GB bf16 embedding through a
mapping would add 1 GB on top of its 2 GB f32 copy. Reads in 32 MB chunks keep the peak at one f32
copy of the tensor (the bound the packer promises).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from modelfmt.config import ConfigError, ModelConfig
from modelfmt.formats import HF_TO_CANON, canon_name, expected_tensors

from .errors import PackError
from .source import TOKENIZER_FILES, Source, SourceTensor, check_tensor_set

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own loader refuses headers over 100 MB
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2}
# Known to the safetensors format but not to us: named as unsupported rather than malformed.
OTHER_DTYPES = ("F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
                "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64")
_READ_CHUNK = 32 * 1024 * 1024
_FIX = "Re-export the checkpoint with safetensors"


# ---- safetensors header ----
def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def parse_header(buf: bytes, file_size: int, file: str | os.PathLike = "<bytes>") -> dict:
    """Validate a safetensors header; ``buf`` = the file's first bytes (at least 8 + header).

    Returns name -> (dtype, shape tuple, absolute start offset, absolute end offset).
    Raises PackError on any inconsistency, never another exception.
    """
    if file_size < 8 or len(buf) < 8:
        raise PackError(file, f"not a safetensors file: only {file_size} bytes", _FIX)
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise PackError(file, f"safetensors header claims {n} bytes, over the "
                        f"{MAX_HEADER_BYTES >> 20} MB limit (corrupt or not safetensors)", _FIX)
    if 8 + n > file_size:
        raise PackError(file, f"safetensors header of {n} bytes runs past the end of the "
                        f"{file_size}-byte file (truncated?)", _FIX)
    if len(buf) < 8 + n:
        raise PackError(file, "file shorter than its safetensors header (truncated?)", _FIX)
    try:
        header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackError(file, f"malformed safetensors header JSON ({str(e)[:120]})", _FIX) from None
    if not isinstance(header, dict):
        raise PackError(file, "malformed safetensors header: not a JSON object", _FIX)
    data_size = file_size - 8 - n
    out = {}
    for name, ent in header.items():
        if name == "__metadata__":
            if not (isinstance(ent, dict) and all(isinstance(v, str) for v in ent.values())):
                raise PackError(file, "malformed safetensors __metadata__ (must map str to str)",
                                _FIX)
            continue
        where = f"tensor {name[:80]!r}"
        if not isinstance(ent, dict) or set(ent) != {"dtype", "shape", "data_offsets"}:
            raise PackError(file, f"malformed safetensors header entry for {where} (need exactly "
                            "dtype, shape, data_offsets)", _FIX)
        dtype, shape, offs = ent["dtype"], ent["shape"], ent["data_offsets"]
        if not isinstance(dtype, str):
            raise PackError(file, f"malformed dtype for {where}", _FIX)
        if dtype not in DTYPE_SIZES:
            known = "unsupported" if dtype in OTHER_DTYPES else "unknown"
            raise PackError(file, f"{known} dtype {dtype[:20]!r} for {where}; supported: "
                            + ", ".join(DTYPE_SIZES), "Convert the weights to F32, F16 or BF16")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise PackError(file, f"malformed shape for {where} (need a list of "
                            "non-negative integers)", _FIX)
        if not (isinstance(offs, list) and len(offs) == 2 and all(
                isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)
                and offs[0] <= offs[1]):
            raise PackError(file, f"malformed data_offsets for {where} (need [begin, end] with "
                            "0 <= begin <= end)", _FIX)
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if offs[1] - offs[0] != nbytes:
            raise PackError(file, f"{where} spans {offs[1] - offs[0]} bytes but its shape "
                            f"{shape} of {dtype} needs {nbytes}", _FIX)
        if offs[1] > data_size:
            raise PackError(file, f"{where} points past the end of the file (data ends at byte "
                            f"{offs[1]} of {data_size})", "The file is truncated or corrupt")
        out[name] = (dtype, tuple(shape), 8 + n + offs[0], 8 + n + offs[1])
    spans = sorted((s, e, k) for k, (_, _, s, e) in out.items() if e > s)
    for (s0, e0, k0), (s1, e1, k1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise PackError(file, f"tensors {k0[:80]!r} and {k1[:80]!r} overlap in the data "
                            "section", "The file is corrupt")
    return out


def read_header(path: Path) -> dict:
    """``parse_header`` on a file on disk."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if len(head) == 8 and n <= MAX_HEADER_BYTES and 8 + n <= size:
                head += f.read(n)
    except OSError as e:
        raise PackError(path, f"cannot read ({e.strerror or e})",
                        "Check the path and permissions") from None
    return parse_header(head, size, path)


# ---- tensors ----
class HFTensor(SourceTensor):
    def __init__(self, canon: str, file: Path, src_name: str, dtype: str,
                 shape: tuple[int, ...], start: int, end: int) -> None:
        self.canon, self.file, self.src_name = canon, file, src_name
        self.src_dtype, self.shape, self.start, self.end = dtype, shape, start, end

    def load_f32(self) -> np.ndarray:
        out = np.empty(self.shape, np.float32)  # the one f32 copy (rows, cols) or (n,)
        flat = out.reshape(-1)
        try:
            with open(self.file, "rb") as f:
                f.seek(self.start)
                if self.src_dtype == "F32":
                    got = f.readinto(memoryview(flat).cast("B"))
                    if got != self.end - self.start:
                        raise PackError(self.file, f"tensor {self.src_name!r} is truncated",
                                        "The file is corrupt")
                    if not np.little_endian:
                        flat.byteswap(inplace=True)
                    return out
                per = _READ_CHUNK // 2
                for i in range(0, flat.size, per):
                    n = min(per, flat.size - i)
                    raw = np.frombuffer(f.read(2 * n), dtype="<u2")  # (n,) 16-bit words
                    if raw.size != n:
                        raise PackError(self.file, f"tensor {self.src_name!r} is truncated",
                                        "The file is corrupt")
                    if self.src_dtype == "BF16":  # bf16 = upper half of an f32
                        flat[i:i + n] = (raw.astype(np.uint32) << 16).view(np.float32)
                    else:
                        flat[i:i + n] = raw.view("<f2")
        except OSError as e:
            raise PackError(self.file, f"cannot read tensor {self.src_name!r} "
                            f"({e.strerror or e})", "Check the file") from None
        return out

    # native(): the default None. F32/F16 sources are stored exactly by quantize() anyway
    # (f16 values survive f32 -> f16 unchanged), without a second f32 copy of the tensor.


# ---- the folder ----
def _read_json(path: Path, what: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PackError(path, "no such file", "An HF model folder needs config.json and "
                        "*.safetensors") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PackError(path, f"cannot read {what} ({e})", "Check the file") from None
    try:
        d = json.loads(text)
    except ValueError as e:
        raise PackError(path, f"invalid JSON ({e})", "Fix or re-download the file") from None
    if not isinstance(d, dict):
        raise PackError(path, f"{what} must hold a JSON object", "Fix or re-download the file")
    return d


def load_config(folder: Path) -> ModelConfig:
    """ModelConfig of an HF folder; every refusal is a PackError naming config.json."""
    path = folder / "config.json"
    d = _read_json(path, "config.json")
    try:
        return ModelConfig.from_hf(d)
    except ConfigError as e:
        msg = str(e)
        hint = ("Only LlamaForCausalLM checkpoints (Llama-2/3/3.1/3.2, SmolLM2) are supported"
                if "support" not in msg else "This tool packs LlamaForCausalLM checkpoints only")
        if msg.startswith(("missing field", "rope_scaling of type")) or "must be" in msg:
            hint = "Fix config.json"
        raise PackError(path, msg, hint) from None
    except (TypeError, ValueError) as e:
        raise PackError(path, f"invalid field value ({e})", "Fix config.json") from None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        wm = _read_json(index, "safetensors index").get("weight_map")
        if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
            raise PackError(index, "no valid weight_map object", "Fix or re-download the index")
        files = []
        for name in sorted(set(wm.values())):
            if Path(name).name != name or not name.endswith(".safetensors"):
                raise PackError(index, f"weight_map names an invalid file {name!r}",
                                "Fix or re-download the index")
            if not (folder / name).is_file():
                raise PackError(folder / name, "missing (listed in model.safetensors.index.json)",
                                "Download every shard of the checkpoint")
            files.append(folder / name)
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise PackError(folder, "no *.safetensors files",
                        "Give an HF folder with safetensors weights (or a .gguf file)")
    return files


def _hf_name(canon: str) -> str:
    """The HF name of a canonical tensor name (for messages)."""
    parts = canon.split(".")
    i = parts[1] if canon.startswith("layers.") else None
    key = canon.replace(f"layers.{i}.", "layers.{i}.") if i else canon
    for hf, c in HF_TO_CANON.items():
        if c == key:
            return hf.replace("{i}", i) if i else hf
    return canon


def _order(canon: str) -> tuple:
    """Stream order: embeddings, layers in order, final norm, output."""
    if canon.startswith("layers."):
        return (1, int(canon.split(".")[1]), canon)
    return ({"tok_embeddings": 0, "norm": 2, "output": 3}.get(canon, 4), 0, canon)


class HFSource(Source):
    kind = "hf"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder)
        self.name = self.path.resolve().name
        self.config = load_config(self.path)
        by_canon: dict[str, HFTensor] = {}
        for file in _weight_files(self.path):
            for src, (dtype, shape, start, end) in read_header(file).items():
                canon = canon_name(src, HF_TO_CANON)
                if canon is None:
                    continue  # known and dropped (rotary inv_freq)
                if canon is False:
                    raise PackError(file, f"unknown tensor {src[:100]!r}",
                                    "Only Llama weights without biases are supported")
                if canon in by_canon:
                    raise PackError(file, f"tensor {src!r} appears twice",
                                    "The checkpoint is inconsistent")
                # unexpected names and wrong shapes are reported against their own file
                check_tensor_set(file, self.config, {canon: shape}, {canon: src}, partial=True)
                by_canon[canon] = HFTensor(canon, file, src, dtype, shape, start, end)
        if self.config.tie_word_embeddings:
            by_canon.pop("output", None)  # tied: the model reads tok_embeddings (manifest alias)
        for canon in expected_tensors(self.config):
            tied = canon == "output" and self.config.tie_word_embeddings
            if canon not in by_canon and not tied:
                raise PackError(self.path, f"missing tensor {_hf_name(canon)!r} ({canon})",
                                "Set tie_word_embeddings in config.json if the model ties them"
                                if canon == "output" else "The checkpoint is incomplete")
        check_tensor_set(self.path, self.config, {k: t.shape for k, t in by_canon.items()},
                         {k: t.src_name for k, t in by_canon.items()})
        self._tensors = [by_canon[k] for k in sorted(by_canon, key=_order)]

    def tensors(self) -> Iterator[SourceTensor]:
        return iter(self._tensors)

    def tokenizer_files(self) -> dict[str, bytes]:
        out = {}
        for name in TOKENIZER_FILES:
            p = self.path / name
            if p.is_file():
                out[name] = p.read_bytes()
        return out
