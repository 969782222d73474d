"""Random packed weights made straight on the GPU, for benchmarks of big shapes. Native only.

``SyntheticSource(preset, quant)`` is a ``ModelSource`` whose manifest has the exact tensor table
``weights_tool pack`` would write for ``weights_tool synth --preset PRESET`` (same shapes, formats,
row blocks), but whose "shards" are virtual: one per part, filled from a reused 8 MiB random
pattern (quantized values) or a constant (f16 scales near 0.01, f32 norms of 1). Nothing is
written to disk, so an 8B-shape model is ready in seconds; the numbers it computes are meaningless,
the time it takes is not. The bench takes it as MODEL = ``synth:PRESET:QUANT``.
"""

from __future__ import annotations

from modelfmt import formats
from modelfmt.config import ModelConfig
from driver.loader import ModelError, ModelSource

PIECE = 8 << 20


def _rows_per_block(fmt: str, rows: int, cols: int, G: int) -> int:
    """Largest multiple of 64 rows whose every part fits MAX_PART_BYTES (all rows if they fit)."""
    def biggest(r):
        return max(formats.part_nbytes(fmt, p, r, cols, G) for p in formats.PART_NAMES[fmt])
    if biggest(rows) <= formats.MAX_PART_BYTES:
        return rows
    r = formats.MAX_PART_BYTES // biggest(1) // 64 * 64
    return max(64, r)


class SyntheticSource(ModelSource):
    def __init__(self, preset: str, quant: str = "q4_0", group_size: int = 32):
        from modelfmt.presets import PRESETS
        if preset not in PRESETS:
            raise ModelError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        if quant not in formats.FORMATS:
            raise ModelError(f"unknown quant {quant!r}; choose from {', '.join(formats.FORMATS)}")
        d = {**PRESETS[preset], "architectures": ["LlamaForCausalLM"], "model_type": "llama"}
        cfg = ModelConfig.from_hf(d)
        self.where = f"synth:{preset}:{quant}"
        self._kinds: list[tuple] = []   # per virtual shard: (fmt, part, is_norm)
        shards, tensors = [], {}
        for name, shape in formats.expected_tensors(cfg).items():
            if name == "output" and cfg.tie_word_embeddings:
                tensors[name] = {"alias": "tok_embeddings"}
                continue
            if len(shape) == 1:
                fmt, rows, cols = "f32", 1, shape[0]
            else:
                fmt, (rows, cols) = quant, shape
            step = _rows_per_block(fmt, rows, cols, group_size) if len(shape) == 2 else 1
            blocks = []
            for r0 in range(0, rows, step):
                rb = min(step, rows - r0)
                parts = {}
                for pn in formats.PART_NAMES[fmt]:
                    nb = formats.part_nbytes(fmt, pn, rb, cols, group_size)
                    parts[pn] = {"shard": len(shards), "offset": 0, "nbytes": nb}
                    shards.append({"file": f"virtual-{len(shards)}", "nbytes": nb, "sha256": ""})
                    self._kinds.append((fmt, pn, len(shape) == 1))
                blocks.append({"row_start": r0, "rows": rb, "parts": parts})
            tensors[name] = {"dtype": fmt, "shape": list(shape), "group_size": group_size,
                             "blocks": blocks}
        biggest = max(s["nbytes"] for s in shards)
        self.manifest = {
            "format": formats.MANIFEST_FORMAT, "format_version": formats.MANIFEST_VERSION,
            "name": f"{preset}-{quant}-random", "config": cfg.to_json(),
            "quant": {"scheme": quant, "group_size": group_size, "source": "random (bench)"},
            "tensors": tensors, "shards": shards,
            "generation": {"bos_token_id": cfg.bos_token_id,
                           "eos_token_ids": list(cfg.eos_token_id)},
            "requirements": {"max_storage_buffer_binding_size": biggest,
                             "max_buffer_size": biggest, "features": []}}
        self._pattern = None

    def _fill(self, fmt: str, part: str, norm: bool) -> bytes:
        import numpy as np
        if part in ("scales", "mins"):
            v = np.full(PIECE // 2, 0.01 if part == "scales" else -0.05, np.float16)
            return v.tobytes()
        if norm:
            return np.full(PIECE // 4, 1.0, np.float32).tobytes()
        if fmt == "f32":
            rng = np.random.default_rng(2)
            return (rng.standard_normal(PIECE // 4) * 0.02).astype(np.float32).tobytes()
        if fmt == "f16":
            rng = np.random.default_rng(1)
            return (rng.standard_normal(PIECE // 2) * 0.02).astype(np.float16).tobytes()
        if self._pattern is None:
            self._pattern = np.random.default_rng(0).integers(
                0, 2 ** 32, PIECE // 4, dtype=np.uint32).tobytes()
        return self._pattern

    async def upload_shard(self, gpu, index: int, buffer) -> None:
        fmt, part, norm = self._kinds[index]
        n = self.manifest["shards"][index]["nbytes"]
        piece = self._fill(fmt, part, norm)
        off = 0
        while off < n:
            k = min(len(piece), n - off)
            gpu.write_buffer(buffer, off, piece[:k] if k < len(piece) else piece)
            off += k

    def tokenizer_path(self, name: str):
        raise ModelError(f"{self.where}: a synthetic model has no tokenizer")
