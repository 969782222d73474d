"""Reading a packed model: manifest validation and weight upload, behind a small source interface.

Pure Python (runs in Pyodide). ``ModelSource`` is what the engine loads from: the native one reads
``manifest.json`` and the shards from a folder (numpy-free: plain file reads in 8 MiB pieces); the
browser supplies its own (fetch -> ArrayBuffer -> writeBuffer in JS). Weights live on the GPU as
one STORAGE buffer per shard; every tensor part is bound as (shard buffer, offset, nbytes).
"""

from __future__ import annotations

import json
from pathlib import Path

from modelfmt import formats
from . import gpu as g
from modelfmt.config import ConfigError, ModelConfig

UPLOAD_PIECE = 8 << 20  # bytes per write_buffer while uploading a shard


class ModelError(ValueError):
    """A model folder or manifest we cannot load: the message says what, where, what to do."""


class ContextOverflow(ValueError):
    """prompt + max_tokens do not fit in the context the KV cache was sized for."""


def validate_manifest(m: dict, where: str) -> ModelConfig:
    """Check the manifest's format, version and tensor set; return its ModelConfig."""
    if not isinstance(m, dict):
        raise ModelError(f"{where}: manifest must hold a JSON object")
    if m.get("format") != formats.MANIFEST_FORMAT:
        raise ModelError(f"{where}: format is {m.get('format')!r}, expected "
                         f"{formats.MANIFEST_FORMAT!r}; pack the model with "
                         "`python -m weights_tool pack`")
    if m.get("format_version") != formats.MANIFEST_VERSION:
        raise ModelError(f"{where}: format_version {m.get('format_version')!r} is not supported "
                         f"(this driver reads {formats.MANIFEST_VERSION}); re-pack the model")
    for key in ("config", "tensors", "shards"):
        if key not in m:
            raise ModelError(f"{where}: manifest lacks {key!r}; re-pack the model")
    try:
        cfg = ModelConfig.from_json(m["config"])
    except (ConfigError, TypeError) as e:
        raise ModelError(f"{where}: bad config: {e}") from None
    tensors = m["tensors"]
    n_shards = len(m["shards"])
    for name, shape in formats.expected_tensors(cfg).items():
        t = tensors.get(name)
        if t is None:
            raise ModelError(f"{where}: tensor {name!r} is missing; re-pack the model")
        if "alias" in t:
            if t["alias"] not in tensors or "alias" in tensors[t["alias"]]:
                raise ModelError(f"{where}: tensor {name!r} aliases unknown {t['alias']!r}")
            t = tensors[t["alias"]]
        if tuple(t.get("shape", ())) != tuple(shape):
            raise ModelError(f"{where}: tensor {name!r} has shape {t.get('shape')}, the config "
                             f"needs {list(shape)}")
        if t.get("dtype") not in formats.FORMATS:
            raise ModelError(f"{where}: tensor {name!r} has unknown dtype {t.get('dtype')!r}")
        for blk in t.get("blocks", []):
            for pn, p in blk["parts"].items():
                if pn not in formats.PART_NAMES[t["dtype"]]:
                    raise ModelError(f"{where}: tensor {name!r} has unknown part {pn!r}")
                if not (0 <= p["shard"] < n_shards) or p["offset"] % formats.PART_ALIGN:
                    raise ModelError(f"{where}: tensor {name!r} part {pn!r} has a bad location")
        if not t.get("blocks"):
            raise ModelError(f"{where}: tensor {name!r} has no blocks")
    return cfg


def resolve(m: dict, name: str) -> dict:
    """The tensor entry of ``name``, following an alias (tied embeddings)."""
    t = m["tensors"][name]
    return m["tensors"][t["alias"]] if "alias" in t else t


class ModelSource:
    """Where a model comes from. Subclasses: ``manifest`` (dict), ``where`` (str for messages),
    ``async upload_shard(gpu, index, buffer)``, ``tokenizer_path(name)`` (native only)."""

    manifest: dict
    where: str

    async def upload_shard(self, gpu: g.GPU, index: int, buffer) -> None:
        raise ModelError(f"{self.where}: this model source cannot upload shards")


class FolderSource(ModelSource):
    """A packed model folder on disk (native)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.where = str(self.folder)
        mpath = self.folder / "manifest.json"
        if not self.folder.is_dir():
            raise ModelError(f"{self.folder}: model folder not found; pack one with "
                             "`python -m weights_tool pack SRC OUT`")
        if not mpath.is_file():
            raise ModelError(f"{mpath}: manifest.json not found; is this a packed model folder?")
        try:
            self.manifest = json.loads(mpath.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelError(f"{mpath}: not valid JSON ({e}); re-pack the model") from None
        self.where = str(mpath)
        for s in self.manifest.get("shards", []):
            p = self.folder / s["file"]
            if not p.is_file() or p.stat().st_size != s["nbytes"]:
                raise ModelError(f"{p}: shard missing or of the wrong size; re-pack the model")

    async def upload_shard(self, gpu: g.GPU, index: int, buffer) -> None:
        path = self.folder / self.manifest["shards"][index]["file"]
        with open(path, "rb") as f:
            off = 0
            while True:
                piece = f.read(UPLOAD_PIECE)
                if not piece:
                    break
                if len(piece) % 4:
                    piece += b"\0" * (4 - len(piece) % 4)
                gpu.write_buffer(buffer, off, piece)
                off += len(piece)

    def tokenizer_path(self, name: str) -> Path:
        return self.folder / name


async def upload_weights(gpu: g.GPU, src: ModelSource, progress=None) -> list:
    """One STORAGE buffer per shard, filled from ``src``; returns the buffers by shard index."""
    shards = src.manifest["shards"]
    total = sum(s["nbytes"] for s in shards)
    done = 0
    bufs = []
    for i, s in enumerate(shards):
        buf = gpu.create_buffer(formats.pad4(s["nbytes"]), g.STORAGE, f"shard{i}")
        await src.upload_shard(gpu, i, buf)
        bufs.append(buf)
        done += s["nbytes"]
        if progress:
            progress(done, total)
    return bufs
