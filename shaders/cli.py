"""Command line of the shader package (native only):

    python -m shaders check [--quick] [--op OP ...] [--dump DIR]   numpy check of every kernel variant
    python -m shaders bench [--quick] [--vs-torch] [--out FILE]     bandwidth / FLOP benchmark
    python -m shaders bench --multi [--full] [--quick] [--out FILE] verify-pass kernel sweep
    python -m shaders bench --row-blocks | --sweep FMT [--quick]   decode matvec row blocks / R x wg x RB
    python -m shaders export-cases DIR [--op OP ...] [--full]      the check cases for the page's
                                                                    check mode (/?check=1, docs/WEB.md)
"""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shaders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="run every kernel variant the adapter supports against numpy")
    c.add_argument("--quick", action="store_true", help="small shapes only (CI)")
    c.add_argument("--op", action="append", default=None, help="only this op (repeatable)")
    c.add_argument("--dump", metavar="DIR", help="write every rendered WGSL source to DIR/<slug>.wgsl")
    e = sub.add_parser("export-cases", help="write the single-dispatch check cases (inputs + numpy "
                                            "references) to DIR/cases.json + cases.bin for the page")
    e.add_argument("dir", metavar="DIR", help="output folder (created; both files replaced atomically)")
    e.add_argument("--op", action="append", default=None, help="only this op (repeatable)")
    e.add_argument("--full", action="store_true", help="every case (default: the quick set, as CI)")
    b = sub.add_parser("bench", help="time the weight kernels against the copy / FMA rooflines")
    b.add_argument("--quick", action="store_true", help="small shapes (CPU adapters)")
    b.add_argument("--vs-torch", action="store_true", help="add torch's time on the same shapes")
    b.add_argument("--out", metavar="FILE", help="also write the table to FILE")
    b.add_argument("--tune", action="store_true",
                   help="also sweep the decode kernel's workgroup size x rows per workgroup")
    b.add_argument("--multi", action="store_true",
                   help="instead: the small-M (verify pass) kernel sweep, shaders/bench_multi.py")
    b.add_argument("--row-blocks", action="store_true",
                   help="instead: the decode kernels' row blocks per workgroup (RB = 1, 2, 4) on "
                        "the 1B / 8B layer shapes, q4_0 and q6_k (shaders/matvec.py auto_rb)")
    b.add_argument("--sweep", metavar="FMT",
                   help="instead: FMT's decode matvec over rows per workgroup x workgroup size x "
                        "row blocks on the 1B / 8B layer shapes")
    b.add_argument("--full", action="store_true",
                   help="with --multi: every candidate (minutes; the default is the 1B / 8B "
                        "layer shapes and a few candidates)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "bench" and args.full and not args.multi:
        print("error: --full is an option of bench --multi (the small-M sweep)", file=sys.stderr)
        return 2
    if args.cmd == "bench" and args.sweep is not None:
        from .wgsl_common import SCALED
        if args.sweep not in SCALED:
            print(f"error: --sweep {args.sweep}: a block format, one of {', '.join(SCALED)}",
                  file=sys.stderr)
            return 2
    if args.cmd == "export-cases":   # numpy only: no device needed
        from .case_export import ExportError, export
        try:
            export(args.dir, quick=not args.full, ops=args.op)
        except ExportError as e:
            print(f"error: export-cases: {e}", file=sys.stderr)
            return 2
        return 0
    from . import all_ops, harness, load_ops, registry

    load_ops()
    try:
        harness.get_device()
    except (harness.NoAdapter, AssertionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "check":
        if args.dump:
            os.environ["SHADERS_DUMP"] = args.dump
        ops = args.op
        if ops:   # a helper op (attention_combine, quant_x) runs in the cases of the op covering it
            ops = list(dict.fromkeys(registry.COVERED_BY.get(o, o) for o in ops))
            unknown = [o for o in ops if o not in registry.case_ops()]
            if unknown:
                print(f"error: no check cases for op(s) {unknown}; known: "
                      f"{', '.join(registry.case_ops())} (ops: {', '.join(all_ops())})",
                      file=sys.stderr)
                return 2
        rows = harness.check(quick=args.quick, ops=ops)
        return 0 if rows and all(r["ok"] for r in rows) else 1
    if args.multi:
        from . import bench_multi
        return bench_multi.main(quick=args.quick, out_file=args.out, full=args.full)
    from . import bench

    return bench.main(quick=args.quick, vs_torch=args.vs_torch, out_file=args.out,
                      tune_=args.tune, row_blocks_=args.row_blocks, sweep=args.sweep)
