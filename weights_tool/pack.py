"""pack: stream a Source into OUT = {manifest.json, shard-NNN-<sha12>.bin, tokenizer files}.

Tensor by tensor: load one f32 copy (or take the source's lossless native parts), quantize it in
row blocks of at most MAX_PART_BYTES per part, append each part to the current shard at a
256-byte-aligned offset, and forget it. Shards are written into ``OUT.tmp-<pid>`` beside OUT,
hashed while written, fsynced and renamed to their content address; manifest.json is written
last and the folder renamed to OUT only when complete. Any error or Ctrl-C removes the temp
folder and leaves OUT untouched. Peak memory: one tensor in f32 + one block's parts + small
quantization temporaries.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelfmt import formats, manifest
from modelfmt.formats import (FORMATS, KQUANT, KQUANT_FALLBACK, PART_ALIGN, PART_NAMES, QK_K,
                              QUANTIZED, check_shape)
from modelfmt.quantize import QuantError, error_stats, quantize

from .errors import PackError
from .policy import Policy
from .source import Source, SourceTensor, open_source


@dataclass
class PackSummary:
    out: Path
    name: str
    quant: str
    group_size: int
    total_bytes: int
    shards: int
    tensors: int
    max_abs_err: float
    mean_abs_err: float
    worst_tensor: str
    seconds: float
    largest_part: int
    manifest: dict = field(repr=False, default_factory=dict)

    def line(self) -> str:
        fb = self.manifest.get("quant", {}).get("fallback") if self.manifest else None
        fb = f", {fb['tensors']} matrices as {fb['dtype']} ({fb['why']})" if fb else ""
        q = self.manifest.get("quant", {}) if self.manifest else {}
        rot = f" + {q['rotate']['kind']} rotation" if q.get("rotate") else ""
        how = (f"{self.quant} {q.get('method', 'rtn')}{rot}, "
               f"{q.get('bits_per_weight', 0):.2f} bits/weight")
        return (f"packed {self.name}: {self.total_bytes / 1e6:.1f} MB in {self.shards} shards, "
                f"{self.tensors} tensors, {how} (group {self.group_size}){fb}, worst error "
                f"{self.max_abs_err:.3g} in {self.worst_tensor or '-'}, {self.seconds:.1f} s "
                f"-> {self.out}")


# ---- shard writer ----
class _Shards:
    """Appends parts to shard files in ``folder``; each part 256-aligned, inside one shard."""

    def __init__(self, folder: Path, shard_bytes: int) -> None:
        self.folder, self.limit = folder, shard_bytes
        self.done: list[dict] = []
        self.f = None
        self.pos = 0
        self.hash = None

    def _open(self) -> None:
        self.f = open(self.folder / f"shard-{len(self.done):03d}.partial", "wb")
        self.pos, self.hash = 0, hashlib.sha256()

    def _write(self, b) -> None:
        self.f.write(b)
        self.hash.update(b)
        self.pos += len(b)

    def add(self, a: np.ndarray) -> dict:
        """Write part ``a`` (any dtype, little-endian) padded to 4 bytes; return its location."""
        raw = memoryview(np.ascontiguousarray(a)).cast("B")
        nbytes = formats.pad4(len(raw))
        if self.f is not None and self.pos and _align(self.pos) + nbytes > self.limit:
            self._finish()
        if self.f is None:
            self._open()
        off = _align(self.pos)
        if off > self.pos:
            self._write(b"\0" * (off - self.pos))
        self._write(raw)
        if nbytes > len(raw):
            self._write(b"\0" * (nbytes - len(raw)))
        loc = {"shard": len(self.done), "offset": off, "nbytes": nbytes}
        if self.pos >= self.limit:  # a part as big as a shard gets its own shard
            self._finish()
        return loc

    def _finish(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        sha = self.hash.hexdigest()
        name = f"shard-{len(self.done):03d}-{sha[:12]}.bin"
        os.replace(self.folder / f"shard-{len(self.done):03d}.partial", self.folder / name)
        self.done.append({"file": name, "nbytes": self.pos, "sha256": sha})
        self.f = None

    def close(self) -> list[dict]:
        if self.f is not None:
            self._finish()
        return self.done

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _align(n: int) -> int:
    return (n + PART_ALIGN - 1) // PART_ALIGN * PART_ALIGN


# ---- progress ----
class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done, self.t0 = max(total, 1), enabled, 0, time.time()

    def step(self, nbytes: int, label: str) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * 30)
        rate = self.done / 1e6 / max(time.time() - self.t0, 1e-6)
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}% {rate:7.1f} MB/s {label[:40]:<40}")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def _generation(src: Source, tok: dict[str, bytes]) -> dict:
    cfg = src.config
    g = {}
    if "generation_config.json" in tok:
        try:
            g = json.loads(tok["generation_config.json"])
        except ValueError as e:
            raise PackError(src.path / "generation_config.json" if src.kind == "hf" else src.path,
                            f"invalid JSON in generation_config.json ({e})", "Fix the file") \
                from None
        if not isinstance(g, dict):
            g = {}
    eos = g.get("eos_token_id", list(cfg.eos_token_id))
    eos = [eos] if isinstance(eos, int) else [e for e in (eos or []) if isinstance(e, int)]
    out = {"bos_token_id": g.get("bos_token_id", cfg.bos_token_id), "eos_token_ids": eos}
    for k in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if isinstance(g.get(k), (int, float)) and not isinstance(g.get(k), bool):
            out[k] = g[k]
    return out


def target_format(quant: str, cols: int, src_dtype: str = "", keep_native: bool = False,
                  G: int = 32) -> str:
    """The format one matrix is stored in: its source block type with ``keep_native`` when it is
    one of ours (GGUF Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K/F16/F32; the 32-wide group types only at
    group size 32), else ``quant``; a K-quant ``quant`` on a width that is not a multiple of 256
    falls back to KQUANT_FALLBACK (q4_k -> q4_1, q5_k / q6_k -> q8_0), as llama.cpp falls back
    to Q5_0 / Q5_1 / Q8_0 for such tensors."""
    src = src_dtype.lower()
    if keep_native and src in FORMATS and (G == 32 or src in KQUANT):
        return src
    if quant in KQUANT and cols % QK_K:
        return KQUANT_FALLBACK[quant]
    return quant


def matrix_format(policy: Policy, canon: str, cols: int, src_dtype: str = "",
                  keep_native: bool = False, G: int = 32) -> str:
    """The format matrix ``canon`` is stored in: a user's ``--keep`` rule naming it wins (with
    the K-quant width fallback), else ``target_format`` of the policy's format (default rules
    or --quant) under ``keep_native``."""
    user = policy.user_format(canon)
    if user is not None:
        return target_format(user, cols, G=G)
    return target_format(policy.format(canon), cols, src_dtype, keep_native, G)


# ---- one tensor ----
def _pack_tensor(t: SourceTensor, fmt: str, G: int, max_part: int,
                 shards: _Shards) -> tuple[dict, float, float, int]:
    """Write one tensor; a matrix in ``fmt`` (``matrix_format``'s answer), a norm in f32;
    return (manifest entry, max err, summed err, elements)."""
    if len(t.shape) == 1:
        w = t.load_f32()  # (n,) f32 norm weights, always stored f32
        if not np.isfinite(w).all():
            raise QuantError("holds NaN or infinite values")
        loc = shards.add(w)
        blocks = [{"row_start": 0, "rows": 1, "parts": {"data": loc}}]
        return manifest.tensor_entry("f32", t.shape, G, blocks), 0.0, 0.0, 0
    rows, cols = t.shape
    # Lossless copy of GGUF blocks (32 wide, or K-quant super-blocks). F32/F16 need none:
    # quantize() keeps f16 and f32 values bit-exactly, and skipping native() avoids a second
    # full copy of a big tensor.
    native = t.native(fmt) if (fmt in QUANTIZED and G == 32) or fmt in KQUANT else None
    w = t.load_f32()  # (rows, cols) f32: the reference for the error stats
    blocks, worst, total = [], 0.0, 0.0
    for r0, nr in manifest.row_blocks(fmt, (rows, cols), G, max_part):
        r1 = r0 + nr
        if native is not None:
            parts = {k: v[r0:r1] for k, v in native.items()}  # (r1-r0, ...) per part
        else:
            parts = quantize(w[r0:r1], fmt, G)
        locs = {p: shards.add(parts[p]) for p in PART_NAMES[fmt]}
        if fmt != "f32" or native is not None:
            m, s = error_stats(w[r0:r1], parts, fmt, G)
            worst, total = max(worst, m), total + s
        blocks.append({"row_start": r0, "rows": r1 - r0, "parts": locs})
        del parts
    entry = manifest.tensor_entry(fmt, (rows, cols), G, blocks)
    entry["src"] = t.src_dtype
    entry["max_abs_err"] = worst
    entry["mean_abs_err"] = total / w.size
    return entry, worst, total, w.size


# ---- pack ----
def pack(src, out, quant: str = "q4_0", group_size: int = 32, shard_mb: float = 32,
         force: bool = False, progress: bool = True, name: str | None = None,
         keep_native: bool = False, max_part_bytes: int | None = None, *,
         method: str = "rtn", keep=(), uniform: bool = False, calib=None,
         calib_tokens: int | None = None, log=None, rotate: str = "off",
         rotate_seed: int = 0) -> PackSummary:
    """Pack ``src`` (a Source, an HF folder or a .gguf path) into the folder ``out``.

    quant: q4_0 | q4_1 | q8_0 | f16 | f32 | q4_k | q5_k | q6_k for the matrices (norms stay f32);
    with q4_0 / q4_1 the default mixed-precision rules keep some matrices at q8_0
    (weights_tool.policy; ``uniform`` drops them, ``keep`` adds 'PATTERN=FORMAT' rules).
    Matrices whose source block type equals their format are copied losslessly. keep_native:
    store each matrix in its own source type when that is one of ours (explicit ``keep`` rules
    still win). method: rtn | awq | gptq | awq+gptq | auto (weights_tool.calibrate): the
    calibrated ones choose q4_0 / q4_1 / q8_0 blocks from the model's activations on ``calib``
    (a text file; default the Shakespeare calibration split), ``calib_tokens`` tokens; K-quant,
    f16 and f32 matrices are always rounded by their own rule. rotate: off | hadamard | random
    (weights_tool.rotate, seeded by ``rotate_seed``): fold the RMSNorm weights and rotate the
    residual stream first (the model is untied; calibration runs on the rotated model); any
    format, not with ``keep_native``. Raises PackError on bad input, before anything is written.
    """
    t0 = time.time()
    if quant not in FORMATS:
        raise PackError(str(out), f"unknown quant {quant!r}", "Choose one of " + ", ".join(FORMATS))
    if not (isinstance(group_size, int) and group_size > 0 and group_size % 8 == 0):
        raise PackError(str(out), f"group size must be a positive multiple of 8, got {group_size}",
                        "Use --group-size 32")
    if not shard_mb > 0:
        raise PackError(str(out), f"shard size must be positive, got {shard_mb}",
                        "Use --shard-mb 32")
    max_part = formats.MAX_PART_BYTES if max_part_bytes is None else max_part_bytes
    out = Path(out)
    if out.exists() and not force:
        raise PackError(out, "already exists", "Pass --force to replace it")
    from .rotate import KINDS, rotated
    if rotate not in KINDS:
        raise PackError("--rotate", f"unknown rotation {rotate!r}", "Choose one of " + ", ".join(KINDS))
    if rotate != "off" and keep_native:
        raise PackError("--rotate", f"--rotate {rotate} makes new weights, --keep-native copies "
                        "the source's blocks", "Choose one of them")
    own = not isinstance(src, Source)
    source = open_source(src) if own else src
    try:
        source, rinfo = rotated(source, rotate, rotate_seed)
        policy = Policy(quant, keep, uniform, FORMATS, source.config.num_hidden_layers)
        policy.check(n for n, shape, _ in source.tensor_info() if len(shape) == 2)
        source, qinfo = _calibrated(source, quant, group_size, method, policy, keep_native,
                                    calib, calib_tokens, log)
        if rinfo is not None:
            qinfo["rotate"] = rinfo
        return _pack(source, out, quant, group_size, int(shard_mb * 1024 * 1024), force, progress,
                     name or out.resolve().name, keep_native, max_part, t0, policy, qinfo)
    finally:
        if own:
            source.close()


def _calibrated(src: Source, quant: str, G: int, method: str, policy: Policy, keep_native: bool,
                calib, calib_tokens, log) -> tuple[Source, dict]:
    """Resolve ``method``; for a calibrated one, tokenize the calibration text now (bad input is
    found before anything is written) and wrap ``src``. Returns (source, manifest quant info)."""
    from . import calibrate
    cols = {n: s[-1] for n, s, _ in src.tensor_info() if len(s) == 2}

    def fmt_of(canon: str) -> str:                  # keep_native is never calibrated
        return matrix_format(policy, canon, cols[canon], G=G) if canon in cols else \
            policy.format(canon)
    if method == "auto":
        method = "rtn" if keep_native else calibrate.best_method(quant, src, fmt_of)
    if method not in calibrate.METHODS:
        raise PackError("--method", f"unknown method {method!r}",
                        "Choose one of " + ", ".join(calibrate.METHODS + ("auto",)))
    info = {"method": method}
    if method == "rtn":
        if calib is not None or calib_tokens is not None:
            raise PackError("--calib", "calibration text given but --method rtn uses none",
                            "Choose --method awq or gptq, or drop --calib / --calib-tokens")
        return src, info
    if quant not in QUANTIZED:
        kind = "K-quants round by their own rule" if quant in KQUANT else \
            "it chooses quantized blocks"
        raise PackError("--method", f"{method} does not apply to --quant {quant} ({kind}; "
                        "awq / gptq choose q4_0 / q4_1 / q8_0 blocks)",
                        "Use --method rtn, or --quant q4_0 / q4_1 / q8_0")
    if keep_native:
        raise PackError("--method", f"{method} re-quantizes, --keep-native copies",
                        "Choose one of them")
    if G != 32:
        raise PackError("--method", f"{method} writes 32-wide blocks",
                        "Use --group-size 32 with a calibrated method")
    cal = calibrate.calibration_tokens(src, calib, calib_tokens or calibrate.DEFAULT_TOKENS)
    info["calibration"] = cal.record()
    cs = calibrate.CalibratedSource(src, method, fmt_of, cal, G, log=log)
    info["requantized"] = cs.requantized()    # matrices the method chose blocks for
    return cs, info


def _pack(src: Source, out: Path, quant: str, G: int, shard_bytes: int, force: bool,
          progress: bool, name: str, keep_native: bool, max_part: int, t0: float,
          policy: Policy, qinfo: dict) -> PackSummary:
    if out.resolve() == Path(src.path).resolve():
        raise PackError(out, "OUT is the source itself", "Choose another OUT folder")
    # Pre-flight, before anything is written: shapes that cannot be stored in their format.
    infos = src.tensor_info()
    for canon, shape, sdt in infos:
        if len(shape) == 2:
            fmt = matrix_format(policy, canon, shape[1], sdt, keep_native, G)
            why = check_shape(fmt, shape[0], shape[1], G)
            if why:
                raise PackError(src.path, f"tensor {canon!r} {list(shape)} cannot be stored as "
                                f"{fmt}: {why}", "Choose another --group-size or --quant f32")
            if manifest.rows_per_block(fmt, shape[0], shape[1], G, max_part) <= 0:
                raise PackError(src.path, f"{manifest.ROW_BLOCK_MULTIPLE} rows of tensor {canon!r} exceed "
                                f"the part limit of {max_part} bytes",
                                "This model is too wide for WebGPU's binding limit")
    tok = src.tokenizer_files()
    generation = _generation(src, tok)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PackError(out.parent, f"cannot create folder ({e.strerror or e})",
                        "Choose another OUT") from None
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shards = _Shards(tmp, shard_bytes)
    bar = _Progress(sum(4 * int(np.prod(s)) for _, s, _ in infos), progress)
    current = "?"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        tensors: dict[str, dict] = {}
        worst, worst_name, total_err, total_n = 0.0, "", 0.0, 0
        quant_src: dict[str, int] = {}
        fallback = 0
        for t in src.tensors():
            current = t.canon
            fmt = matrix_format(policy, t.canon, t.shape[-1], t.src_dtype, keep_native, G) \
                if len(t.shape) == 2 else "f32"
            entry, m, s, n = _pack_tensor(t, fmt, G, max_part, shards)
            tensors[t.canon] = entry
            # matrices stored in the fallback format because of their width
            fb = target_format(quant, t.shape[-1]) if len(t.shape) == 2 else quant
            fallback += fb != quant and entry["dtype"] == fb
            if n:
                quant_src[t.src_dtype] = quant_src.get(t.src_dtype, 0) + 1
            if m > worst or not worst_name and n:
                worst, worst_name = m, t.canon
            total_err, total_n = total_err + s, total_n + n
            bar.step(4 * int(np.prod(t.shape)), t.canon)
        current = "shards"
        if "output" not in tensors and src.config.tie_word_embeddings:
            tensors["output"] = {"alias": "tok_embeddings"}
        shard_list = shards.close()
        for fname, data in tok.items():
            _write_sync(tmp / fname, data)
        largest = manifest.largest_part(tensors)
        total_bytes = sum(s["nbytes"] for s in shard_list)
        main_src = max(quant_src, key=quant_src.get) if quant_src else "?"
        man = manifest.build(
            name, src.config,
            manifest.quant_record(
                quant, G, f"{src.kind} {main_src}", tensors, keep_native=keep_native,
                keep=policy.rules(), **qinfo,
                fallback={"dtype": KQUANT_FALLBACK[quant], "tensors": fallback,
                          "why": f"width not a multiple of {QK_K}"} if fallback else None),
            tensors, shard_list, generation=generation, tokenizer_files=tok,
            stats={"total_bytes": total_bytes, "max_abs_err": worst,
                   "mean_abs_err": total_err / max(total_n, 1), "worst_tensor": worst_name})
        current = "manifest.json"
        _write_sync(tmp / "manifest.json", json.dumps(man, indent=1).encode())
        _fsync_dir(tmp)
        _publish(tmp, out, force)
    except BaseException as e:
        shards.abort()
        bar.end()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, QuantError):
            raise PackError(src.path, f"tensor {current!r}: {e}",
                            "Check the checkpoint or choose another --quant") from None
        if isinstance(e, OSError) and not isinstance(e, PackError):
            if e.errno == errno.ENOSPC:
                raise PackError(out, f"disk full while writing {current!r} (nothing was kept)",
                                "Free some space or choose another OUT") from None
            raise PackError(out, f"write failed while writing {current!r} ({e.strerror or e})",
                            "Check the OUT folder") from None
        raise
    bar.end()
    return PackSummary(out=out, name=name, quant=quant, group_size=G, total_bytes=total_bytes,
                       shards=len(shard_list), tensors=len(tensors), max_abs_err=worst,
                       mean_abs_err=total_err / max(total_n, 1), worst_tensor=worst_name,
                       seconds=time.time() - t0, largest_part=largest, manifest=man)


def _write_sync(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename the complete temp folder to OUT; an old OUT (with force) goes only afterwards."""
    old = None
    if out.exists() or out.is_symlink():
        if not force:
            raise PackError(out, "already exists", "Pass --force to replace it")
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)  # put the previous model back
        raise
    _fsync_dir(out.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
