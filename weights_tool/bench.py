"""bench: synthesize a preset-shaped checkpoint, pack it in a child, print MB/s and peak RSS.

Not a test: numbers depend on the machine. Packing runs as a subprocess that reports its own
peak RSS, so the synthesizer's memory is not counted.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The packing child reports its own peak RSS: VmHWM (peak of its address space) where /proc
# exists, because ru_maxrss is carried across fork + exec on Linux and would include this
# process's synthesis peak; getrusage of the children elsewhere.
_CHILD = """
import os, resource, sys
from weights_tool.cli import main
rc = main(sys.argv[1:])
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")] \\
    if os.path.exists("/proc/self/status") else []
print("PEAK_KIB", hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def _peak(stdout: str) -> int:
    for line in stdout.splitlines():
        if line.startswith("PEAK_KIB"):
            return int(line.split()[1]) * 1024
        print(line)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def _make_source(folder: Path, preset: str, layers: int | None = None,
                 dtype: str = "f32") -> Path:
    """An HF folder of ``preset`` written by weights_tool.synth (``layers``: fewer decoder
    layers of the same shape; a calibrated pack holds one layer at a time, so its peak memory
    does not depend on the count)."""
    from .errors import PackError
    from .synth import synth
    try:
        from .fetch import data_path
        tok_dir = data_path("llama3-tokenizer")
    except PackError:  # not fetched: packing speed does not depend on the tokenizer
        tok_dir = folder.parent / "placeholder-tokenizer"
        tok_dir.mkdir(exist_ok=True)
        (tok_dir / "tokenizer.json").write_text("{}")
    over = {"num_hidden_layers": layers} if layers else None
    return synth(folder, preset, tokenizer_dir=tok_dir, overrides=over, dtype=dtype)


def bench(preset: str = "llama3.2-1b-shape", quant: str = "q4_0", keep: bool = False,
          method: str = "rtn", calib_tokens: int | None = None, layers: int | None = None,
          dtype: str = "f32", rotate: str = "off") -> int:
    """Synthesize, then pack in a child process; ``method`` awq / gptq calibrates on the
    Shakespeare calibration split (``calib_tokens`` tokens) one layer at a time; ``rotate``
    (off | hadamard | random) rotates the residual stream first (weights_tool.rotate)."""
    work = Path(tempfile.mkdtemp(prefix="weights-bench-"))
    try:
        t0 = time.time()
        src = _make_source(work / "src", preset, layers, dtype)
        src_bytes = sum(f.stat().st_size for f in src.iterdir() if f.suffix == ".safetensors")
        print(f"bench: synthesized {preset} ({src_bytes / 1e6:.0f} MB) in {time.time() - t0:.1f} s",
              flush=True)
        out = work / "packed"
        t1 = time.time()
        extra = ["--calib-tokens", str(calib_tokens)] if calib_tokens else []
        extra += ["--rotate", rotate]
        r = subprocess.run([sys.executable, "-c", _CHILD, "pack", str(src), str(out),
                            "--quant", quant, "--method", method, *extra, "--no-progress"],
                           stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parent.parent)
        secs = time.time() - t1
        if r.returncode:
            print(f"bench: pack failed with exit code {r.returncode}", file=sys.stderr)
            return r.returncode
        peak = _peak(r.stdout)
        m = json.loads((out / "manifest.json").read_text())
        largest_f32 = max(4 * _numel(e["shape"]) for e in m["tensors"].values() if "shape" in e)
        layer_f32 = sum(4 * _numel(e["shape"]) for k, e in m["tensors"].items()
                        if k.startswith("layers.0.") and "shape" in e)
        what = f"{preset}{f' ({layers} layers)' if layers else ''} -> {quant} {method}" + \
            (f" + {rotate} rotation" if rotate != "off" else "")
        print(f"bench: packed {what}: {src_bytes / 1e6 / secs:.1f} MB/s of source, "
              f"{m['stats']['total_bytes'] / 1e6:.1f} MB out, {secs:.1f} s, peak RSS "
              f"{peak / 2**20:.0f} MiB (largest tensor in f32 {largest_f32 / 2**20:.0f} MiB, "
              + (f"bound {largest_f32 / 2**20 + 512:.0f} MiB)" if method == "rtn" else
                 f"one layer in f32 {layer_f32 / 2**20:.0f} MiB; calibrated packs hold one "
                 "layer, its activations and its GPTQ matrices)"))
        return 0
    finally:
        if keep:
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    sys.exit(bench(*sys.argv[1:2]))
