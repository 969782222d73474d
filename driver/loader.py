"""Reading a packed model: manifest validation and weight upload, behind a small source interface.

Pure Python (runs in Pyodide). ``ModelSource`` is what the engine loads from: the native one reads
``manifest.json`` and the shards from a folder (numpy-free: plain file reads in 8 MiB pieces); the
browser supplies its own (fetch -> ArrayBuffer -> writeBuffer in JS). Weights live on the GPU as
one STORAGE buffer per shard; every tensor part is bound as (shard buffer, offset, nbytes).
"""

from __future__ import annotations

import json
from pathlib import Path

from modelfmt import formats, manifest
from modelfmt.config import ModelConfig

from . import gpu as g

UPLOAD_PIECE = 8 << 20  # bytes per write_buffer while uploading a shard


class ModelError(ValueError):
    """A model folder or manifest we cannot load: the message says what, where, what to do."""

    kind = "model"
    hint = "Re-pack the model with `python -m weights_tool pack SRC OUT`, or pick another one."


class DeviceCannotRun(ModelError):
    """The model needs a kernel this device cannot run (e.g. more storage buffers per shader
    stage than it allows, even split)."""

    kind = "capability"
    hint = "Use a smaller model or a GPU with higher limits."


class ContextOverflow(ValueError):
    """prompt + max_tokens do not fit in the context the KV cache was sized for."""

    kind = "context-overflow"
    hint = "Shorten the conversation, lower max_tokens, or load the model with a larger context."


def validate_manifest(m: dict, where: str) -> ModelConfig:
    """The manifest's ModelConfig (modelfmt.manifest's rules), or ModelError naming the problem."""
    try:
        return manifest.validate(m, where)
    except manifest.ManifestError as e:
        raise ModelError(f"{e}; re-pack the model with `python -m weights_tool pack`") from None


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
