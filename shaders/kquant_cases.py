"""Check cases of the K-quant formats (q4_k, q5_k, q6_k) for every kernel that reads a weight:
matvec (plain, accumulate, LM-head row block at an offset, fused final RMSNorm), gate_up
(decode, decode with the fused RMSNorm, prefill tiles), qkv_rope_decode (fused, split, fused
norm), matmul (4 and 8 tokens a thread), embed (row blocks) and the speculative verify pass's
matvec_multi / gate_up_multi. Built from each op's own case constructor, so the
reference is the op's numpy reference on the same dequantized weights (``harness.weight_parts``:
weights_tool's K-quant quantizer, whose dequantization is gguf's bit for bit). Widths are
multiples of 256 (the super-block); decode cases run with the default unpacking (int8 x with the
rounding residual where packed_4x8_integer_dot_product exists, else exact f32: the check's
no-packed-dot variant) and with unpack 0 and 2 explicitly.

Pure Python; numpy only inside the cases (as every op module's).
"""

from __future__ import annotations

from modelfmt.formats import KQUANT

from . import embed, gate_up, matmul, matvec, multi, qkv_decode
from .registry import register_cases


@register_cases("matvec")
def _matvec(quick: bool):
    c = matvec._matvec_case
    shapes = [(7, 256), (67, 512), (13, 768)] + ([] if quick else [(576, 2048), (1024, 4096)])
    out = [c(f, r, n) for f in KQUANT for r, n in shapes]
    out += [c(f, 33, 256, acc=1) for f in KQUANT]
    out += [c(f, 19, 512, row_offset=45) for f in KQUANT]           # an LM-head row block
    out += [c(f, 67, 512, unpack=u) for f in KQUANT for u in (0, 2)]
    out += [c("q4_k", 19, 256, row_offset=45, acc=1, unpack=0)]
    # the decode LM head with the final RMSNorm fused (norm_eps), also as a row block at an offset
    n = matvec._matvec_norm_case
    out += [n(f, 67, 256) for f in KQUANT] + [n("q6_k", 19, 512, row_offset=45)]
    if not quick:
        out += [n(f, 1536, 768) for f in KQUANT]
    return out


@register_cases("gate_up")
def _gate_up(quick: bool):
    c = gate_up._case
    out = [c(f, 67, 256, 1, 1) for f in KQUANT]
    out += [c(f, 67, 256, 1, 1, norm=True) for f in KQUANT]
    out += [c(f, 70, 512, m, 0) for f in KQUANT for m in (17, 130)]
    out += [c(f, 67, 256, 1, 1, unpack=u) for f in KQUANT for u in (0, 2)]
    if not quick:
        out += [c("q4_k", 2048, 1024, 1, 1, norm=True), c("q6_k", 1536, 512, 33, 0)]
    return out


@register_cases("qkv_rope_decode")
def _qkv_decode(quick: bool):
    c = qkv_decode._case
    out = [c("q4_k", 256, 4, 1, 64, "f16", 5), c("q5_k", 512, 4, 4, 128, "f32", 0),
           c("q6_k", 256, 8, 2, 32, "f16", 70000),
           c("q4_k", 256, 4, 2, 64, "f16", 9, split=("q", "kv")),
           c("q6_k", 256, 4, 2, 64, "f16", 3, heads="v"),           # a Q4_K_M attn_v alone
           c("q4_k", 256, 4, 2, 64, "f32", 7, heads="qk")]
    out += [c(f, 256, 4, 1, 64, "f16", 5, norm=True) for f in KQUANT]
    out += [c(f, 256, 4, 1, 64, "f16", 4, unpack=0) for f in KQUANT]
    if not quick:
        out += [c("q4_k", 2048, 32, 8, 64, "f16", 4095), c("q6_k", 1024, 16, 4, 64, "f32", 17)]
    return out


@register_cases("matmul")
def _matmul(quick: bool):
    c = matmul._case
    out = [c(f, r, n, m) for f in KQUANT for r, n, m in ((7, 256, 3), (67, 512, 17),
                                                          (70, 256, 130))]
    out += [c("q4_k", 33, 256, 5, acc=1), c("q6_k", 67, 512, 130, mt=8),
            c("q5_k", 33, 256, 129, acc=1, mt=8)]
    if not quick:
        out += [c(f, 1024, 2048, 64) for f in KQUANT]
    return out


@register_cases("embed")
def _embed(quick: bool):
    c = embed._case
    out = []
    for f in KQUANT:
        out.append(c(f, 256, 7, 0, [0, 6, 3]))
        out.append(c(f, 512, 13, 20, [19, 20, 32, 33, 5, 25, 1000]))   # a row block
    return out


@register_cases("matvec_multi")
def _matvec_multi(quick: bool):
    c = multi._case
    out = [c("matvec_multi", f, 67, 256, 5, 3) for f in KQUANT]
    out += [c("matvec_multi", f, 7, 512, 4, 4, unpack=u) for f in KQUANT for u in (0, 2)]
    if not quick:
        out += [c("matvec_multi", "q4_k", 1024, 2048, 8, 5)]
    return out


@register_cases("gate_up_multi")
def _gate_up_multi(quick: bool):
    c = multi._case
    return [c("gate_up_multi", f, 67, 256, 3, 2) for f in KQUANT]
