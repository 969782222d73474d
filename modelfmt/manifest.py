"""The manifest (``manifest.json``): its one owner. Read, validate, build, the row-block rule, the
requirements a device must meet. Standard library only (runs in Pyodide).

Who uses what:
  ``weights_tool pack`` and ``driver.native.synthetic``  ``row_blocks``, ``tensor_entry``,
                                                          ``requirements``, ``build``
  ``weights_tool verify``                                  ``read`` + ``problems`` (+ shard hashes)
  ``driver.loader`` (native and browser)                   ``validate`` (raises on the first problem)
  ``server.py`` (model list)                               ``read`` + ``header_problem``
  ``driver.graph``                                         ``resolve`` (tied ``output`` -> embedding)

Layout (docs/ARCHITECTURE.md has an example): format, format_version, name, config
(``ModelConfig.to_json()``), quant, tensors (Meta names -> {dtype, shape, group_size, blocks:
[{row_start, rows, parts: {part: {shard, offset, nbytes}}}]} or {alias}), shards ([{file, nbytes,
sha256}]), tokenizer ({files}), generation, requirements, stats.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import formats
from .config import ModelConfig

FORMAT = "llama3-webgpu"
VERSION = 1
ROW_BLOCK_MULTIPLE = 64   # row blocks are multiples of 64 rows (kernel tile heights divide it)

# The least maxStorageBuffersPerShaderStage the driver's graph needs for weights of each format:
# the most storage buffers one of its dispatches binds, with qkv_rope_decode split as finely as
# it goes and the RMSNorms unfused. GENERATED, not typed: tests/test_layers.py recomputes it from
# the ops driver.graph declares (``OPS``) and the kernels themselves (shaders.min_storage_buffers)
# and prints the dict to paste here when a kernel or a format changes.
MIN_STORAGE_BUFFERS = {"f16": 6, "f32": 6, "q4_0": 6, "q4_1": 8, "q4_k": 6, "q5_k": 6, "q6_k": 6,
                       "q8_0": 6}


class ManifestError(ValueError):
    """A manifest that cannot be used: the message names the file and the first problem."""

    kind = "model"
    hint = "Re-pack the model with `python -m weights_tool pack SRC OUT`."


# ---- reading ----
def read(folder) -> tuple[dict | None, str | None]:
    """(manifest, None) or (None, what is wrong) for ``folder/manifest.json``; never raises."""
    p = Path(folder) / "manifest.json"
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "manifest.json: missing (not a packed model, or packing did not finish)"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"manifest.json: unreadable or invalid JSON ({e})"
    if not isinstance(m, dict):
        return None, "manifest.json: not a JSON object"
    return m, None


def header_problem(m) -> str | None:
    """Why ``m`` is not a manifest of this format and version, or None."""
    if not isinstance(m, dict):
        return "manifest: not a JSON object"
    if m.get("format") != FORMAT or m.get("format_version") != VERSION:
        return (f"manifest: format {m.get('format')!r} version {m.get('format_version')!r}, "
                f"expected {FORMAT!r} version {VERSION}")
    return None


def resolve(m: dict, name: str) -> dict:
    """The tensor entry of ``name``, following an alias (tied embeddings)."""
    t = m["tensors"][name]
    return m["tensors"][t["alias"]] if "alias" in t else t


# ---- validation ----
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def problems(m, shard_sizes: list | None = None) -> tuple[ModelConfig | None, list[str]]:
    """(config or None, one line per problem) of manifest ``m``: header, config, the tensor table
    against the config (names, shapes, dtypes, parts, 256-byte alignment, part sizes, row blocks
    covering every row, no overlaps, parts inside their shards) and the requirements against the
    largest part. ``shard_sizes``: the shards' real sizes (None where unknown); default: as the
    manifest states them. Never raises on malformed input."""
    head = header_problem(m)
    if head:
        return None, [head]
    out: list[str] = []
    try:
        cfg = ModelConfig.from_json(m["config"])
    except Exception as e:  # any malformed config is a finding, not a crash
        out.append(f"manifest: invalid config ({type(e).__name__}: {e})")
        cfg = None
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards:
        out.append("manifest: no shard list")
        shards = []
    if shard_sizes is None:
        shard_sizes = [s.get("nbytes") if isinstance(s, dict) and _is_int(s.get("nbytes"))
                       else None for s in shards]
    largest = _check_tensors(m.get("tensors"), cfg, shard_sizes, out)
    req = m.get("requirements")
    if not isinstance(req, dict):
        out.append("manifest: missing requirements")
    else:
        for k in ("max_storage_buffer_binding_size", "max_buffer_size"):
            if not _is_int(req.get(k)) or req[k] < largest:
                out.append(f"manifest: requirements.{k} = {req.get(k)!r} is below the largest "
                           f"part ({largest} bytes)")
    return cfg, out


def validate(m, where: str) -> ModelConfig:
    """The manifest's ModelConfig; raises ManifestError naming ``where`` and the first problem."""
    cfg, found = problems(m)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ManifestError(f"{where}: {found[0]}{more}")
    return cfg


def _check_tensors(tensors, cfg, shard_sizes: list, out: list[str]) -> int:
    """Tensor table checks; returns the largest part size."""
    if not isinstance(tensors, dict):
        out.append("manifest: no tensor table")
        return 0
    want = formats.expected_tensors(cfg) if cfg is not None else None
    spans: dict[int, list[tuple[int, int, str]]] = {}
    largest = 0
    for name, e in tensors.items():
        try:
            largest = max(largest, _check_tensor(name, e, tensors, want, shard_sizes, spans, out))
        except (TypeError, KeyError, ValueError, AttributeError, IndexError) as ex:
            out.append(f"tensor {name!r}: malformed entry ({type(ex).__name__}: {ex})")
    if want is not None:
        for name in want:
            if name not in tensors:
                out.append(f"tensor {name!r}: missing")
    for shard, lst in spans.items():
        lst.sort()
        for (a0, a1, n0), (b0, b1, n1) in zip(lst, lst[1:]):
            if b0 < a1:
                out.append(f"tensor {n1}: overlaps {n0} in shard {shard}")
    return largest


def _check_tensor(name, e, tensors, want, shard_sizes, spans, out) -> int:
    if "alias" in e:
        tgt = e["alias"]
        if not isinstance(tgt, str) or tgt not in tensors or "alias" in tensors[tgt]:
            out.append(f"tensor {name!r}: alias target {tgt!r} is not a stored tensor")
        elif want is not None and want.get(name) != want.get(tgt):
            out.append(f"tensor {name!r}: alias target {tgt!r} has another shape")
        return 0
    dtype, shape = e["dtype"], e["shape"]
    if want is not None and name not in want:
        out.append(f"tensor {name!r}: not a tensor of this model")
    if not (isinstance(shape, list) and shape and all(_is_int(s) and s > 0 for s in shape)):
        out.append(f"tensor {name!r}: bad shape {shape!r}")
        return 0
    if want is not None and name in want and tuple(shape) != want[name]:
        out.append(f"tensor {name!r}: shape {shape} but the config implies {list(want[name])}")
    if dtype not in formats.FORMATS:
        out.append(f"tensor {name!r}: unknown dtype {dtype!r}")
        return 0
    G = e.get("group_size", 32) if dtype in formats.QUANTIZED else 32
    if len(shape) == 1:
        cols, unit_rows = shape[0], 1
        if dtype != "f32":
            out.append(f"tensor {name!r}: 1-D tensors must be f32")
    elif len(shape) == 2:
        unit_rows, cols = shape
    else:
        out.append(f"tensor {name!r}: {len(shape)}-D tensors are not supported")
        return 0
    why = formats.check_shape(dtype, 1, cols, G) if _is_int(G) else "bad group size"
    if why:
        out.append(f"tensor {name!r}: {why}")
        return 0
    blocks = e["blocks"]
    if not isinstance(blocks, list) or not blocks:
        out.append(f"tensor {name!r}: no blocks")
        return 0
    largest, row = 0, 0
    for k, b in enumerate(blocks):
        where = f"tensor {name!r} block {k}"
        r0, nr = b["row_start"], b["rows"]
        if not (_is_int(r0) and _is_int(nr) and nr > 0) or r0 != row:
            out.append(f"{where}: rows {r0!r}+{nr!r} do not continue at row {row}")
            return largest
        row = r0 + nr
        parts = b["parts"]
        if set(parts) != set(formats.PART_NAMES[dtype]):
            out.append(f"{where}: parts {sorted(parts)} but {dtype} needs "
                       f"{list(formats.PART_NAMES[dtype])}")
            continue
        for pname, loc in parts.items():
            s, off, n = loc["shard"], loc["offset"], loc["nbytes"]
            pw = f"{where} part {pname}"
            if not (_is_int(s) and _is_int(off) and _is_int(n)) or s < 0 or off < 0:
                out.append(f"{pw}: bad location {loc!r}")
                continue
            want_n = formats.part_nbytes(dtype, pname, nr if len(shape) == 2 else 1, cols, G)
            if n != want_n:
                out.append(f"{pw}: {n} bytes, its shape needs {want_n}")
            if n % 4:
                out.append(f"{pw}: size {n} is not a multiple of 4")
            if off % formats.PART_ALIGN:
                out.append(f"{pw}: offset {off} is not {formats.PART_ALIGN}-byte aligned")
            if n > formats.MAX_PART_BYTES:
                out.append(f"{pw}: {n} bytes exceeds the {formats.MAX_PART_BYTES}-byte limit")
            if s >= len(shard_sizes):
                out.append(f"{pw}: shard {s} does not exist")
                continue
            size = shard_sizes[s]
            if size is not None and off + n > size:
                out.append(f"{pw}: bytes {off}..{off + n} lie outside shard {s} ({size} bytes)")
            spans.setdefault(s, []).append((off, off + n, f"{name!r} {pname}"))
            largest = max(largest, n)
    if row != unit_rows:
        out.append(f"tensor {name!r}: blocks cover {row} rows of {unit_rows}")
    return largest


# ---- building (pack, synthetic) ----
def rows_per_block(fmt: str, rows: int, cols: int, group_size: int = 32,
                   max_part: int = formats.MAX_PART_BYTES) -> int:
    """THE row-block rule: all rows when every part of the tensor fits ``max_part`` bytes, else
    the largest multiple of ROW_BLOCK_MULTIPLE rows whose parts all fit (0: not even that)."""
    def biggest(r):
        return max(formats.part_nbytes(fmt, p, r, cols, group_size)
                   for p in formats.PART_NAMES[fmt])
    if biggest(rows) <= max_part:
        return rows
    rb = max_part // max(1, biggest(1)) // ROW_BLOCK_MULTIPLE * ROW_BLOCK_MULTIPLE
    while rb > 0 and biggest(rb) > max_part:
        rb -= ROW_BLOCK_MULTIPLE
    return rb


def row_blocks(fmt: str, shape, group_size: int = 32,
               max_part: int = formats.MAX_PART_BYTES) -> list[tuple[int, int]]:
    """(row_start, rows) of each row block of a tensor of ``shape`` (1-D: one block of 1 row)."""
    if len(shape) == 1:
        return [(0, 1)]
    rows, cols = shape
    step = rows_per_block(fmt, rows, cols, group_size, max_part)
    if step <= 0:
        raise ManifestError(f"{ROW_BLOCK_MULTIPLE} rows of a ({rows}, {cols}) {fmt} tensor exceed "
                            f"the part limit of {max_part} bytes")
    return [(r0, min(step, rows - r0)) for r0 in range(0, rows, step)]


def tensor_entry(fmt: str, shape, group_size: int, blocks: list[dict]) -> dict:
    """A stored tensor's entry; ``blocks``: [{row_start, rows, parts: {part: location}}]."""
    e = {"dtype": fmt, "shape": list(shape)}
    if fmt in formats.QUANTIZED:
        e["group_size"] = group_size
    e["blocks"] = blocks
    return e


def largest_part(tensors: dict) -> int:
    return max((p["nbytes"] for e in tensors.values() for b in e.get("blocks", ())
                for p in b["parts"].values()), default=0)


def requirements(tensors: dict) -> dict:
    """What a device must offer to run these tensors: WebGPU limits in snake_case (the largest
    part is one binding and one buffer; storage buffers from MIN_STORAGE_BUFFERS) and features."""
    largest = largest_part(tensors)
    fmts = {e["dtype"] for e in tensors.values() if "dtype" in e}
    return {"max_storage_buffer_binding_size": largest, "max_buffer_size": largest,
            "max_storage_buffers_per_shader_stage": max(MIN_STORAGE_BUFFERS[f] for f in fmts),
            "features": []}


def bits_per_weight(tensors: dict) -> float:
    """Stored bits per matrix element over every matrix of a tensor table (scales, mins and
    4-byte padding included; norms and aliases not counted)."""
    bits, n = 0, 0
    for t in tensors.values():
        if "blocks" not in t or len(t.get("shape", ())) != 2:
            continue
        n += t["shape"][0] * t["shape"][1]
        bits += 8 * sum(p["nbytes"] for b in t["blocks"] for p in b["parts"].values())
    return bits / n if n else 0.0


def quant_record(scheme: str, group_size: int, source: str, tensors: dict, *,
                 keep_native: bool = False, method: str = "rtn", keep=(),
                 fallback: dict | None = None, calibration: dict | None = None,
                 requantized: int | None = None, rotate: dict | None = None) -> dict:
    """The manifest's ``quant`` section: how the blocks were chosen (the engine reads none of it;
    every method writes ordinary blocks and the per-tensor ``dtype`` is authoritative).

    scheme: --quant; source: "<kind> <main source type>"; keep_native: source block types kept;
    method: rtn | awq | gptq | awq+gptq; keep: the mixed-precision rules applied, defaults first
    ('PATTERN=FORMAT'); fallback: {dtype, tensors, why} for K-quant width fallbacks;
    calibration: {text, sha256, tokens, window}; requantized: matrices the method chose blocks
    for; rotate: the residual-stream rotation {kind, seed, size, factors} (weights_tool.rotate),
    absent when off. bits_per_weight is computed here from ``tensors``."""
    q = {"scheme": scheme, "group_size": group_size, "source": source,
         "keep_native": keep_native, "method": method, "keep": list(keep),
         "bits_per_weight": round(bits_per_weight(tensors), 4)}
    if fallback:
        q["fallback"] = fallback
    if calibration is not None:
        q["calibration"] = calibration
    if requantized is not None:
        q["requantized"] = requantized
    if rotate is not None:
        q["rotate"] = rotate
    return q


def build(name: str, config: ModelConfig, quant: dict, tensors: dict, shards: list, *,
          generation: dict, tokenizer_files=(), stats: dict | None = None) -> dict:
    """The manifest dict (``tensors`` complete, ``shards`` written): the one place it is put
    together, so pack and the synthetic bench models write the same thing."""
    m = {"format": FORMAT, "format_version": VERSION, "name": name, "config": config.to_json(),
         "quant": quant, "tensors": tensors, "shards": shards,
         "tokenizer": {"files": sorted(tokenizer_files)}, "generation": generation,
         "requirements": requirements(tensors)}
    if stats is not None:
        m["stats"] = stats
    return m
