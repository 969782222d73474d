"""verify: re-hash every shard of a packed model and check its tensor table against the config.

``verify(out) -> list[str]``: an empty list when OUT is sound, else one line per problem, each
naming the shard or tensor at fault. It never raises on a malformed manifest: a packed model is
input like any other.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from modelfmt import formats
from modelfmt.config import ModelConfig
from modelfmt.formats import FORMATS, PART_ALIGN, PART_NAMES, QUANTIZED, expected_tensors, part_nbytes

_SHARD_NAME = re.compile(r"shard-(\d{3,})-([0-9a-f]{12})\.bin")
_HASH_CHUNK = 8 * 1024 * 1024


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(out) -> tuple[dict | None, str | None]:
    """(manifest, None) or (None, problem)."""
    p = Path(out) / "manifest.json"
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "manifest.json: missing (not a packed model, or packing did not finish)"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"manifest.json: unreadable or invalid JSON ({e})"
    if not isinstance(m, dict):
        return None, "manifest.json: not a JSON object"
    return m, None


def verify(out) -> list[str]:
    out = Path(out)
    m, err = load_manifest(out)
    if err:
        return [err]
    problems: list[str] = []
    if m.get("format") != formats.MANIFEST_FORMAT or m.get("format_version") != \
            formats.MANIFEST_VERSION:
        problems.append(f"manifest: format {m.get('format')!r} version "
                        f"{m.get('format_version')!r}, expected {formats.MANIFEST_FORMAT!r} "
                        f"version {formats.MANIFEST_VERSION}")
    try:
        cfg = ModelConfig.from_json(m["config"])
    except Exception as e:  # any malformed config is a finding, not a crash
        problems.append(f"manifest: invalid config ({type(e).__name__}: {e})")
        cfg = None
    shard_sizes = _check_shards(out, m.get("shards"), problems)
    largest = _check_tensors(m.get("tensors"), cfg, shard_sizes, problems)
    req = m.get("requirements")
    if not isinstance(req, dict):
        problems.append("manifest: missing requirements")
    else:
        for k in ("max_storage_buffer_binding_size", "max_buffer_size"):
            if not _is_int(req.get(k)) or req[k] < largest:
                problems.append(f"manifest: requirements.{k} = {req.get(k)!r} is below the largest "
                                f"part ({largest} bytes)")
    tok = m.get("tokenizer", {})
    for name in (tok.get("files", []) if isinstance(tok, dict) else []):
        if not isinstance(name, str) or Path(name).name != name or not (out / name).is_file():
            problems.append(f"tokenizer file {name!r}: missing")
    return problems


def _check_shards(out: Path, shards, problems: list[str]) -> list[int | None]:
    """Size and sha256 of every shard; returns their sizes (None where unusable)."""
    if not isinstance(shards, list) or not shards:
        problems.append("manifest: no shard list")
        return []
    sizes: list[int | None] = []
    for i, s in enumerate(shards):
        f = s.get("file") if isinstance(s, dict) else None
        if not isinstance(f, str) or not _SHARD_NAME.fullmatch(f):
            problems.append(f"shard {i}: bad file name {f!r}")
            sizes.append(None)
            continue
        path = out / f
        if not _is_int(s.get("nbytes")) or not isinstance(s.get("sha256"), str):
            problems.append(f"shard {f}: missing nbytes or sha256")
            sizes.append(None)
            continue
        if not path.is_file():
            problems.append(f"shard {f}: missing")
            sizes.append(None)
            continue
        size = path.stat().st_size
        if size != s["nbytes"]:
            problems.append(f"shard {f}: {size} bytes on disk, manifest says {s['nbytes']}")
        digest = _sha256(path)
        if digest != s["sha256"]:
            problems.append(f"shard {f}: sha256 mismatch (corrupt file)")
        elif not f.endswith(f"-{digest[:12]}.bin"):
            problems.append(f"shard {f}: name does not match its sha256 {digest[:12]}")
        sizes.append(min(size, s["nbytes"]))
    return sizes


def _check_tensors(tensors, cfg, shard_sizes: list, problems: list[str]) -> int:
    """Tensor table checks; returns the largest part size."""
    if not isinstance(tensors, dict):
        problems.append("manifest: no tensor table")
        return 0
    want = expected_tensors(cfg) if cfg is not None else None
    spans: dict[int, list[tuple[int, int, str]]] = {}
    largest = 0
    for name, e in tensors.items():
        try:
            largest = max(largest, _check_tensor(name, e, tensors, want, shard_sizes, spans,
                                                 problems))
        except (TypeError, KeyError, ValueError, AttributeError, IndexError) as ex:
            problems.append(f"tensor {name!r}: malformed entry ({type(ex).__name__}: {ex})")
    if want is not None:
        for name in want:
            if name not in tensors:
                problems.append(f"tensor {name!r}: missing")
    for shard, lst in spans.items():
        lst.sort()
        for (a0, a1, n0), (b0, b1, n1) in zip(lst, lst[1:]):
            if b0 < a1:
                problems.append(f"tensor {n1}: overlaps {n0} in shard {shard}")
    return largest


def _check_tensor(name, e, tensors, want, shard_sizes, spans, problems) -> int:
    if "alias" in e:
        tgt = e["alias"]
        if not isinstance(tgt, str) or tgt not in tensors or "alias" in tensors[tgt]:
            problems.append(f"tensor {name!r}: alias target {tgt!r} is not a stored tensor")
        elif want is not None and want.get(name) != want.get(tgt):
            problems.append(f"tensor {name!r}: alias target {tgt!r} has another shape")
        return 0
    dtype, shape = e["dtype"], e["shape"]
    if want is not None and name not in want:
        problems.append(f"tensor {name!r}: not a tensor of this model")
    if not (isinstance(shape, list) and shape and all(_is_int(s) and s > 0 for s in shape)):
        problems.append(f"tensor {name!r}: bad shape {shape!r}")
        return 0
    if want is not None and name in want and tuple(shape) != want[name]:
        problems.append(f"tensor {name!r}: shape {shape} but the config implies "
                        f"{list(want[name])}")
    if dtype not in FORMATS:
        problems.append(f"tensor {name!r}: unknown dtype {dtype!r}")
        return 0
    G = e.get("group_size", 32) if dtype in QUANTIZED else 32
    if len(shape) == 1:
        rows, cols, unit_rows = 1, shape[0], 1
        if dtype != "f32":
            problems.append(f"tensor {name!r}: 1-D tensors must be f32")
    elif len(shape) == 2:
        rows, cols = shape
        unit_rows = rows
    else:
        problems.append(f"tensor {name!r}: {len(shape)}-D tensors are not supported")
        return 0
    if not _is_int(G) or formats.check_shape(dtype, 1, cols, G):
        why = formats.check_shape(dtype, 1, cols, G) if _is_int(G) else None
        problems.append(f"tensor {name!r}: {why or 'bad group size'}")
        return 0
    blocks = e["blocks"]
    if not isinstance(blocks, list) or not blocks:
        problems.append(f"tensor {name!r}: no blocks")
        return 0
    largest, row = 0, 0
    for k, b in enumerate(blocks):
        where = f"tensor {name!r} block {k}"
        r0, nr = b["row_start"], b["rows"]
        if not (_is_int(r0) and _is_int(nr) and nr > 0) or r0 != row:
            problems.append(f"{where}: rows {r0!r}+{nr!r} do not continue at row {row}")
            return largest
        row = r0 + nr
        parts = b["parts"]
        if set(parts) != set(PART_NAMES[dtype]):
            problems.append(f"{where}: parts {sorted(parts)} but {dtype} needs "
                            f"{list(PART_NAMES[dtype])}")
            continue
        for pname, loc in parts.items():
            s, off, n = loc["shard"], loc["offset"], loc["nbytes"]
            pw = f"{where} part {pname}"
            if not (_is_int(s) and _is_int(off) and _is_int(n)) or s < 0 or off < 0:
                problems.append(f"{pw}: bad location {loc!r}")
                continue
            want_n = part_nbytes(dtype, pname, nr if len(shape) == 2 else 1, cols, G)
            if n != want_n:
                problems.append(f"{pw}: {n} bytes, its shape needs {want_n}")
            if n % 4:
                problems.append(f"{pw}: size {n} is not a multiple of 4")
            if off % PART_ALIGN:
                problems.append(f"{pw}: offset {off} is not {PART_ALIGN}-byte aligned")
            if n > formats.MAX_PART_BYTES:
                problems.append(f"{pw}: {n} bytes exceeds the {formats.MAX_PART_BYTES}-byte limit")
            if s >= len(shard_sizes):
                problems.append(f"{pw}: shard {s} does not exist")
                continue
            size = shard_sizes[s]
            if size is not None and off + n > size:
                problems.append(f"{pw}: bytes {off}..{off + n} lie outside shard {s} "
                                f"({size} bytes)")
            spans.setdefault(s, []).append((off, off + n, f"{name!r} {pname}"))
            largest = max(largest, n)
    if row != unit_rows:
        problems.append(f"tensor {name!r}: blocks cover {row} rows of {unit_rows}")
    return largest
