"""The Source interface: one checkpoint (HF folder or GGUF file), streamed tensor by tensor.

Every loader yields ``SourceTensor`` objects under their canonical (Meta) names with HF row
layout (Q/K rows in rotate-half order, i.e. GGUF's permutation already undone). The packer asks
each tensor either for a lossless copy in our own bit layout (``native(fmt)``) or for float32
values (``load_f32()``) to quantize. Only one tensor's data is materialised at a time.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

from modelfmt.config import ModelConfig
from modelfmt.formats import expected_tensors

from .errors import PackError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


class SourceTensor(ABC):
    """One tensor of a source checkpoint.

    canon:     canonical name, e.g. "layers.0.attention.wq"
    shape:     (rows, cols) for matrices, (n,) for norms
    src_dtype: the source storage type, "F32" "F16" "BF16" "Q4_0" "Q4_1" "Q8_0" "Q4_K" ...
    """

    canon: str
    shape: tuple[int, ...]
    src_dtype: str

    @abstractmethod
    def load_f32(self):
        """Dequantized float32 ndarray of ``shape``, HF layout (Q/K rows un-permuted)."""

    def native(self, fmt: str):
        """Lossless parts in OUR layout (modelfmt/formats.py) when the source block type is ``fmt``.

        Returns None when it is not. Parts are 2-D arrays with one row per tensor row:
          "qs":     uint32 (rows, cols/8) for q4_*, (rows, cols/4) for q8_0
          "scales": uint16 (rows, cols/G) f16 bit patterns; "mins" likewise (q4_1)
          "data":   float32 (rows, cols) for f32, uint16 (rows, cols) f16 bits for f16
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.canon} {self.src_dtype} {self.shape}>"


class Source(ABC):
    """A checkpoint. ``kind`` is "hf" or "gguf"; ``name`` the default model name."""

    kind: str = "?"
    path: Path
    config: ModelConfig
    name: str

    @abstractmethod
    def tensors(self) -> Iterator[SourceTensor]:
        """Every tensor the model needs, one at a time (``output`` absent when tied)."""

    def tensor_info(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(canon, shape, src_dtype) of every tensor, without reading any data."""
        return [(t.canon, tuple(t.shape), t.src_dtype) for t in self.tensors()]

    def tokenizer_files(self) -> dict[str, bytes]:
        """File name -> content for tokenizer.json, tokenizer_config.json, generation_config.json
        (those that exist)."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_tensor_set(file, cfg: ModelConfig, shapes: dict[str, tuple[int, ...]],
                     src_names: dict[str, str] | None = None, partial: bool = False) -> None:
    """Compare the canonical tensors a source holds with what ``cfg`` needs; raise PackError.

    ``shapes``: canon -> shape found; ``src_names``: canon -> name in the file (for messages).
    ``output`` may be missing only with tie_word_embeddings. ``partial=True`` checks only the
    tensors given (names and shapes), not that every needed tensor is there.
    """
    src_names = src_names or {}
    want = expected_tensors(cfg)
    for canon, shape in shapes.items():
        label = src_names.get(canon, canon)
        if canon not in want:
            raise PackError(file, f"unexpected tensor {label!r} (canonical {canon!r}) for a "
                            f"{cfg.num_hidden_layers}-layer model",
                            "Check that config.json matches the weights")
        if tuple(shape) != tuple(want[canon]):
            raise PackError(file, f"tensor {label!r} has shape {list(shape)} but config.json "
                            f"implies {list(want[canon])}",
                            "Check that config.json matches the weights")
    for canon in want:
        if partial or canon in shapes:
            continue
        if canon == "output" and cfg.tie_word_embeddings:
            continue
        hint = ("Set tie_word_embeddings in config.json if the model ties them"
                if canon == "output" else "The checkpoint is incomplete")
        raise PackError(file, f"missing tensor {canon!r}", hint)


def open_source(path: str | os.PathLike) -> Source:
    """HF folder -> HFSource; ``*.gguf`` file -> GGUFSource (imported lazily)."""
    p = Path(path)
    if p.is_dir():
        from .hf_load import HFSource
        return HFSource(p)
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise PackError(p, "no such file", "Give an existing .gguf file or an HF folder")
        try:
            from .gguf_load import GGUFSource
        except ImportError as e:
            raise PackError(p, f"GGUF support is not available ({e})",
                            "Convert the model to an HF folder") from None
        return GGUFSource(p)
    if not p.exists():
        raise PackError(p, "no such file or folder",
                        "Give an HF model folder (with config.json) or a .gguf file")
    raise PackError(p, "not an HF folder or a .gguf file",
                    "Give an HF model folder (with config.json) or a .gguf file")
