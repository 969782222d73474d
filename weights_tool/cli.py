"""Command line: ``python -m weights_tool {pack,verify,inspect,bench,synth,fetch}``.

Each subcommand calls one importable function. Bad input (PackError, ConfigError) becomes one
line ``error: <file>: <problem>. <what to do>`` on stderr and exit code 2, with no traceback;
Ctrl-C becomes ``interrupted; nothing written`` and exit code 130. ``verify`` exits 1 when it
finds a problem.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from modelfmt.config import ConfigError
from modelfmt.formats import FORMATS

from .errors import PackError


def _pack(args) -> int:
    from .pack import pack
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _sigterm)  # a killed pack cleans up like a Ctrl-C
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    s = pack(args.src, args.out, quant=args.quant, group_size=args.group_size,
             shard_mb=args.shard_mb, force=args.force, progress=progress, name=args.name,
             keep_native=args.keep_native, method=args.method, keep=args.keep or (),
             uniform=args.uniform, calib=args.calib, calib_tokens=args.calib_tokens, log=log,
             rotate=args.rotate, rotate_seed=args.rotate_seed)
    print(s.line())
    return 0


def _verify(args) -> int:
    from .verify import verify
    problems = verify(args.out)
    if problems:
        for p in problems[:50]:
            print(f"error: {args.out}: {p}", file=sys.stderr)
        if len(problems) > 50:
            print(f"error: ... and {len(problems) - 50} more problems", file=sys.stderr)
        return 1
    import json
    m = json.loads((Path(args.out) / "manifest.json").read_text())
    print(f"OK: {len(m['shards'])} shards, {len(m['tensors'])} tensors verified")
    return 0


def _inspect(args) -> int:
    from .inspect_cmd import inspect_text
    print(inspect_text(args.path))
    return 0


def _bench(args) -> int:
    from .bench import bench
    return bench(preset=args.preset, quant=args.quant, keep=args.keep, method=args.method,
                 calib_tokens=args.calib_tokens, layers=args.layers, dtype=args.dtype,
                 rotate=args.rotate)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m weights_tool",
                                 description="Pack Llama-3-family checkpoints into web shards.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("pack", help="pack an HF folder or .gguf into OUT (manifest + shards)")
    p.add_argument("src", help="HF model folder (config.json + *.safetensors) or a .gguf file")
    p.add_argument("out", help="output folder (must not exist unless --force)")
    p.add_argument("--quant", choices=FORMATS, default="q4_0", help="matrix format (default q4_0)")
    p.add_argument("--group-size", type=int, default=32, help="columns per scale (default 32)")
    p.add_argument("--shard-mb", type=float, default=32, help="shard size in MiB (default 32)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--name", help="model name in the manifest (default: OUT's folder name)")
    p.add_argument("--keep-native", action="store_true",
                   help="keep each matrix in its source type when we have it (GGUF Q4_0/Q4_1/"
                        "Q8_0/Q4_K/Q5_K/Q6_K/F16/F32): lossless for every tensor")
    p.add_argument("--method", default="auto",
                   choices=("auto", "rtn", "awq", "gptq", "awq+gptq"),
                   help="how q4_0 / q4_1 / q8_0 blocks are chosen: rtn (round to nearest, no "
                        "data), awq (activation-aware scaling + clipping search), gptq (error "
                        "compensation), awq+gptq; auto (default): the best measured for --quant "
                        "when the checkpoint has a tokenizer, rtn with --keep-native "
                        "(docs/QUANTIZATION.md). K-quants, f16 and f32 always round by their "
                        "own rule: awq / gptq with them is an error")
    p.add_argument("--calib", metavar="FILE",
                   help="UTF-8 calibration text for awq/gptq (default: the Shakespeare "
                        "calibration split the set-up fetches)")
    p.add_argument("--calib-tokens", type=int, metavar="N",
                   help="calibration tokens (default 4096, in windows of 512)")
    p.add_argument("--keep", action="append", metavar="PATTERN=FORMAT",
                   help="store the matrices matching PATTERN (Meta names, shell wildcards: "
                        "'layers.*.feed_forward.w2') in FORMAT; repeatable, later rules win; "
                        "wins over --keep-native")
    p.add_argument("--uniform", action="store_true",
                   help="every matrix in --quant: no default 8-bit embedding / LM head")
    p.add_argument("--rotate", default="off", metavar="off|hadamard|random",
                   help="rotate the residual stream before quantizing (QuaRot / SpinQuant R1: "
                        "RMSNorm weights folded, Q = random-sign Hadamard, or a random "
                        "orthogonal Q): the same model, fewer outliers per block; unties a tied "
                        "LM head (default off; docs/QUANTIZATION.md)")
    p.add_argument("--rotate-seed", type=int, default=0, metavar="N",
                   help="seed of the rotation's random signs / matrix (default 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="per-layer calibration timing")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_pack)

    p = sub.add_parser("verify", help="re-hash shards and check the tensor table of OUT")
    p.add_argument("out")
    p.set_defaults(func=_verify)

    p = sub.add_parser("inspect", help="print config, tensor table and sizes of OUT or SRC")
    p.add_argument("path")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("bench", help="synthesize a preset model, pack it, print MB/s and peak RSS")
    p.add_argument("--preset", default="llama3.2-1b-shape")
    p.add_argument("--quant", choices=FORMATS, default="q4_0")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders")
    p.add_argument("--method", default="rtn", choices=("rtn", "awq", "gptq", "awq+gptq"),
                   help="packing method (calibrated ones measure the layer-at-a-time memory)")
    p.add_argument("--calib-tokens", type=int, help="calibration tokens for awq / gptq")
    p.add_argument("--layers", type=int, help="decoder layers to synthesize (default: the "
                   "preset's; peak memory of a calibrated pack is per layer)")
    p.add_argument("--dtype", default="f32", choices=("f32", "bf16", "f16"),
                   help="synthesized checkpoint dtype (bf16 halves the disk needed)")
    p.add_argument("--rotate", default="off", metavar="off|hadamard|random",
                   help="rotate the residual stream before packing (as pack --rotate)")
    p.set_defaults(func=_bench)

    # Subcommands written in other modules; hidden only while a module does not exist yet.
    for mod in ("synth", "fetch"):
        try:
            module = __import__(f"weights_tool.{mod}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"weights_tool.{mod}":
                raise
            continue
        module.register(sub)
    return ap


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
        return 0 if rc is None else int(rc)
    except PackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"error: config: {e}. Only LlamaForCausalLM checkpoints are supported.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
