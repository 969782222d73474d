"""Random packed weights made straight on the GPU, for benchmarks of big shapes. Native only.

``SyntheticSource(preset, quant)`` is a ``ModelSource`` whose manifest has the exact tensor table
``weights_tool pack`` would write for ``weights_tool synth --preset PRESET`` (same shapes, formats,
row blocks: both build it with ``modelfmt.manifest``), but whose "shards" are virtual: one per
part, filled from a reused 8 MiB random pattern (quantized values) or a constant (f16 scales near 0.01, f32 norms of 1; K-quant
super-block records repeat one random record with finite small f16 d / dmin). Nothing is
written to disk, so an 8B-shape model is ready in seconds; the numbers it computes are meaningless,
the time it takes is not. The bench takes it as MODEL = ``synth:PRESET:QUANT``.
"""

from __future__ import annotations

from driver.loader import ModelError, ModelSource
from modelfmt import formats, manifest
from modelfmt.config import ModelConfig
from modelfmt.presets import PRESETS

PIECE = 8 << 20


class SyntheticSource(ModelSource):
    def __init__(self, preset: str, quant: str = "q4_0", group_size: int = 32):
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
            fmt = quant if len(shape) == 2 else "f32"
            cols = shape[-1]
            if fmt in formats.KQUANT and cols % formats.QK_K:   # pack's fallback (target_format)
                fmt = formats.KQUANT_FALLBACK[fmt]
            blocks = []
            for r0, rb in manifest.row_blocks(fmt, shape, group_size):
                parts = {}
                for pn in formats.PART_NAMES[fmt]:
                    nb = formats.part_nbytes(fmt, pn, rb, cols, group_size)
                    parts[pn] = {"shard": len(shards), "offset": 0, "nbytes": nb}
                    shards.append({"file": f"virtual-{len(shards)}", "nbytes": nb, "sha256": ""})
                    self._kinds.append((fmt, pn, len(shape) == 1))
                blocks.append({"row_start": r0, "rows": rb, "parts": parts})
            tensors[name] = manifest.tensor_entry(fmt, shape, group_size, blocks)
        self.manifest = manifest.build(
            f"{preset}-{quant}-random", cfg,
            {"scheme": quant, "group_size": group_size, "source": "random (bench)"},
            tensors, shards, generation={"bos_token_id": cfg.bos_token_id,
                                         "eos_token_ids": list(cfg.eos_token_id)})
        self._pattern = None

    def _fill(self, fmt: str, part: str, norm: bool) -> bytes:
        import numpy as np
        if part == "sb":   # whole K-quant records (the piece repeats), random but finite scales
            words = formats.SB_WORDS[fmt]
            rec = np.random.default_rng(3).integers(0, 2 ** 32, (PIECE // 4 // words, words),
                                                    dtype=np.uint32)
            if fmt == "q6_k":
                rec[:, 4] = int(np.float16(0.0005).view(np.uint16))          # d
            else:
                rec[:, 0] = int(np.float16(0.002).view(np.uint16)) | (
                    int(np.float16(0.001).view(np.uint16)) << 16)            # d | dmin << 16
            return rec.tobytes()
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


def materialize(preset: str, quant: str, out) -> int:
    """Write ``SyntheticSource(preset, quant)`` as a packed model folder OUT (manifest.json +
    one content-addressed shard per part, sha256 recorded) for the page's bench on big shapes:
    seconds for an 8B shape where ``weights_tool synth`` + ``pack`` takes minutes. The folder
    is built beside OUT and renamed into place only when complete; OUT must not exist.
    Returns the bytes written."""
    import hashlib
    import json
    import os
    import shutil
    from pathlib import Path

    src = SyntheticSource(preset, quant)
    out = Path(out)
    if out.exists():
        raise ModelError(f"{out}: already exists; remove it or pick another folder")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir(parents=True)
    man = json.loads(json.dumps(src.manifest))
    total = 0
    try:
        for i, sh in enumerate(man["shards"]):
            fmt, part, norm = src._kinds[i]
            piece, n, h = src._fill(fmt, part, norm), sh["nbytes"], hashlib.sha256()
            part_path = tmp / f"shard-{i:04d}.partial"
            with open(part_path, "wb") as f:
                off = 0
                while off < n:
                    b = piece[:min(len(piece), n - off)]
                    f.write(b)
                    h.update(b)
                    off += len(b)
            sha = h.hexdigest()
            name = f"shard-{i:04d}-{sha[:12]}.bin"
            os.replace(part_path, tmp / name)
            sh.update(file=name, sha256=sha)
            total += n
        man["quant"]["source"] = f"random (synth:{preset}:{quant})"
        (tmp / "manifest.json").write_text(json.dumps(man, indent=1))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return total


def main(argv=None) -> int:
    """python -m driver.native.synthetic OUT PRESET QUANT: ``materialize``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m driver.native.synthetic",
                                description="write a random packed model (benchmarks) to OUT")
    p.add_argument("out")
    p.add_argument("preset")
    p.add_argument("quant")
    a = p.parse_args(argv)
    try:
        n = materialize(a.preset, a.quant, a.out)
    except (ModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"synthetic {a.preset} {a.quant}: {n / 1e9:.2f} GB -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
