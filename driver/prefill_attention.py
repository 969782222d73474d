"""A prefill chunk's attention over the KV cache: attention_prefill in one pass, or, after a long
cached prefix (a later turn of a chat, a long prompt's later chunks), its split variant and
attention_prefill_combine.

The one-pass kernel gives each workgroup (TQ query rows of one head) the whole walk over the
context, so its time grows with the cached prefix however few the new rows: on an H200 a 151-row
chunk after 2,699 cached positions spent ~1 ms a layer there (1B shape; ``python -m driver bench
--ttft``, docs/PERFORMANCE.md). The split variant walks ranges of ``span`` positions in parallel
(grid z) and a combine merges them. Both are recorded; ``plan.Span`` on the runtime value
``splits`` (``split_rt``, from the chunk's position) picks one per chunk, so a prompt that starts
from an empty cache runs exactly the one-pass kernel. Pure Python (runs in Pyodide).
"""

from __future__ import annotations

from .plan import Dyn, Span

# positions per split of a chunk's context; the split path runs once at least this many positions
# are cached before the chunk (0: never). MAX splits: shaders.attention_prefill.MAX_SPLITS.
SPLIT_KEYS = 512


ONE_PASS = {"splits": 1, "span": 0}


def split_rt(graph, pos: int, n_tok: int) -> dict:
    """Runtime values of the chunk at ``pos`` (``splits`` 1: the one-pass kernel). A decode step
    (one row: no program of it holds the split path) takes the constant, nothing computed."""
    if n_tok <= 1 or graph.prefill_split_tk is None:
        return ONE_PASS
    splits, span = graph.shaders.split_plan(pos, n_tok, graph.prefill_split_tk, SPLIT_KEYS)
    return {"splits": splits, "span": span}


def record(graph, r, q, kc, vc, attn, n_tok, pos, dims: dict) -> None:
    """attn (n_tok, Q) <- attention of q (n_tok, Q) over the cache kc / vc: the one-pass kernel
    while ``splits`` <= 1, else the split pair (where the context can reach SPLIT_KEYS and the
    partials fit one storage binding)."""
    k = graph.kernel("attention_prefill", **dims)
    split = _split_kernels(graph, dims)
    prm = {"n_tok": n_tok, "pos": pos}
    r.dispatch(k, {"q": q, "k_cache": kc, "v_cache": vc, "out": attn}, prm, prm,
               when=Span("splits", 0, 1) if split else None)
    if split:
        ks, kc2, part = split
        when = Span("splits", 2)
        r.dispatch(ks, {"q": q, "k_cache": kc, "v_cache": vc, "part": part},
                   {**prm, "span": Dyn("span")}, {"n_tok": n_tok, "splits": Dyn("splits")},
                   when=when)
        r.dispatch(kc2, {"part": part, "out": attn}, {"n_tok": n_tok, "splits": Dyn("splits")},
                   {"n_tok": n_tok}, when=when)


def _split_kernels(graph, dims: dict):
    """(split kernel, combine kernel, part view) or None; the part buffer (chunk, n_heads,
    MAX_SPLITS, head_dim + 2) f32 is made once and shared by every layer."""
    if SPLIT_KEYS <= 0 or graph.max_ctx <= SPLIT_KEYS:
        return None
    ks = graph.kernel("attention_prefill", **dims, split=1)
    nbytes = graph.chunk * ks.meta["part_bytes_per_row"]
    if nbytes > graph.caps.max_storage_binding:
        return None
    kc = graph.kernel("attention_prefill_combine", n_heads=dims["n_heads"],
                      head_dim=dims["head_dim"])
    if graph.prefill_part is None:
        graph.prefill_part = graph._buf(nbytes, "prefill_attn_part")
    graph.prefill_split_tk = ks.meta["tk"]
    return ks, kc, (graph.prefill_part, 0, nbytes)
