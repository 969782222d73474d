"""quant_x in the recorded programs. Decode (``DecodeOptions.xq``): which inputs of a decode step
are quantized to int8 once, by a quant_x dispatch, instead of by every workgroup of every kernel
that reads them, and the recording of that dispatch. The kernels reading such an input are built
with ``xq=1`` (matvec, gate_up, qkv_rope_decode on q4_0 and the K-quants, shaders/decode_loop.py)
and bind quant_x's records (``Graph.dxq``); the int8 values are the kernels' own, so the logits
are the same. The verify bodies of speculative decoding (``verify_plan``, graph.VERIFY_XQ) do the
same for their q4_0 weights. Browser-safe (driver.graph records with it in the page too).
"""

from __future__ import annotations


def weights(op: str, dims: dict) -> int:
    """Weight elements a decode kernel of ``op`` on ``dims`` reads (``xq_min_weights``)."""
    if op == "gate_up":
        return 2 * dims["ffn"] * dims["hidden"]
    if op == "qkv_rope_decode":
        return dims["hidden"] * dims["head_dim"] * sum(
            dims["n_heads"] if h == "q" else dims["n_kv_heads"] for h in dims["heads"])
    return dims["rows"] * dims["cols"]


def reads(graph, op: str, dims: dict) -> bool:
    """Whether the decode kernel ``op`` on ``dims`` reads quant_x's records: xq on, an int8-x
    format, and the ``xq=1`` kernel builds and fits the device."""
    return bool(graph.opts.xq and graph._fits(op, **dims, xq=1))


def pays(graph, n_weights: int) -> bool:
    """Whether an input read by ``n_weights`` weight elements gets its quant_x dispatch
    (``DecodeOptions.xq_min_weights``: every input natively, the large ones in the page)."""
    return graph.opts.xq and n_weights >= graph.opts.xq_min_weights


def record(graph, r, src, cols: int, norm_w=None):
    """Dispatch quant_x of the decode input ``src`` (cols,) f32 on recorder ``r`` (times
    ``norm_w`` where given: the consumers' fused RMSNorm) into ``graph.dxq``; returns the binding
    of its records, (cols / 32, 5) vec4<u32>."""
    if graph.dxq is None:   # one token's int8 x chunks of the widest input
        graph.dxq = graph._buf(max(graph.dims[d] for d in "HQF") // 32 * 80, "dxq")
    k = graph.kernel("quant_x", fmt="q4_0", cols=cols, nb=1, norm=int(norm_w is not None))
    buf = graph.whole(graph.dxq, cols // 32 * 80)
    r.dispatch(k, {"x": src, **({"norm_w": norm_w} if norm_w is not None else {}), "xq": buf},
               graph.fill(k, n_tok=1), {})
    return buf


def verify_plan(graph, nb: int, on: bool):
    """The verify body's counterpart (``graph.VERIFY_XQ`` = ``on``): ``xq(r, src, cols, *names)``
    dispatches quant_x of ``src`` (nb, cols) into the shared ``graph.xq`` buffer and returns it
    when a weight of ``names`` is q4_0 (its matvec_multi / gate_up_multi then bind it, the others
    ``src``), else None; None everywhere where quant_x does not fit (every kernel quantizes x
    itself)."""
    from .plan import Dyn

    if not (nb and on and all(graph._fits("quant_x", fmt="q4_0", cols=c, nb=nb)
                              for c in set(graph.dims[d] for d in "HQF"))):
        return lambda r, src, cols, *names: None
    if graph.xq is None:   # (32, F / 32, 5) vec4<u32>: int8 x chunks of up to 32 rows
        graph.xq = graph._buf(32 * (max(graph.dims[d] for d in "HQF") // 32) * 80, "xq")

    def xq(r, src, cols, *names):
        if not any(graph.wdims(n)["fmt"] == "q4_0" for n in names):
            return None     # no q4_0 consumer (K-quant / q8_0 layers): nothing to quantize
        k = graph.kernel("quant_x", fmt="q4_0", cols=cols, nb=nb)
        buf = graph.whole(graph.xq, nb * (cols // 32) * 80)
        r.dispatch(k, {"x": src, "xq": buf}, graph.fill(k, n_tok=Dyn("n_tok")), {})
        return buf
    return xq
