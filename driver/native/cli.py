"""``python -m driver generate|bench|quality``: the native command line. Native only.

Each subcommand parses its options and calls one importable function; bad input (missing model,
bad manifest, bad option values, context overflow, no GPU) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from modelfmt.config import ConfigError
from driver.gpu import GPUError
from driver.loader import ContextOverflow, ModelError
from driver.sampler import BadOption

USER_ERRORS = (ModelError, ContextOverflow, BadOption, ConfigError, GPUError)


def run_generate(model: Path, prompt: str | None = None, chat: str | None = None,
                 max_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int = 0,
                 max_context: int | None = None, as_json: bool = False, out=sys.stdout,
                 err=sys.stderr) -> dict:
    """Load ``model``, generate from ``prompt`` (raw text) or ``chat`` (one user message), stream
    the text to ``out`` (or print one JSON object); speeds go to ``err``. Returns the result."""
    from driver.native import load
    from driver.sampler import Sampling
    from driver.tokenizer import StreamDecoder

    Sampling(temperature, top_k, top_p, repetition_penalty, seed)  # validate before loading
    if (prompt is None) == (chat is None):
        raise BadOption("give exactly one of --prompt TEXT or --chat TEXT")
    t0 = time.perf_counter()
    eng = load(model, max_context=max_context)
    load_s = time.perf_counter() - t0
    if chat is not None:
        ids = eng.chat_ids([{"role": "user", "content": chat}])
    else:
        ids = eng.tokenizer().encode(prompt, add_special_tokens=True)
    eng.check_fits(len(ids), max_tokens)
    dec = StreamDecoder(eng.tokenizer())
    out_ids, pieces = [], []
    for t in eng.generate(ids, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                          repetition_penalty=repetition_penalty, seed=seed):
        out_ids.append(t)
        piece = dec.push(t)
        pieces.append(piece)
        if not as_json and piece:
            out.write(piece)
            out.flush()
    st = eng.last_stats
    n_pre = st.get("prompt_tokens", len(ids))
    pre_s = st.get("prefill_s") or float("nan")
    dec_n = max(0, len(out_ids) - 1)
    dec_s = st.get("decode_s") or 0.0
    res = {"prompt_ids": ids, "ids": out_ids, "text": "".join(pieces),
           "prefill_tokens": n_pre, "prefill_tok_s": n_pre / pre_s if pre_s else None,
           "decode_tokens": dec_n, "decode_tok_s": (dec_n / dec_s) if dec_s > 0 else None,
           "load_s": load_s, "dispatches_per_token": eng.dispatches_per_token,
           "adapter": eng.gpu.info.get("description", "")}
    if as_json:
        out.write(json.dumps(res) + "\n")
    else:
        out.write("\n")
        err.write(f"prefill: {n_pre} tokens, {_fmt(res['prefill_tok_s'])} tok/s | decode: "
                  f"{dec_n} tokens, {_fmt(res['decode_tok_s'])} tok/s | "
                  f"{eng.dispatches_per_token} dispatches/token | {res['adapter']}\n")
    eng.close()
    return res


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m driver",
                                 description="Llama-3 on WebGPU (native wgpu-py backend)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    gp = sub.add_parser("generate", help="generate text from a prompt or one chat message")
    gp.add_argument("model", type=Path, help="packed model folder (manifest.json + shards)")
    src = gp.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="raw text to continue")
    src.add_argument("--chat", help="one user message, rendered with the model's chat template")
    gp.add_argument("--max-tokens", type=_positive_int, default=128)
    gp.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gp.add_argument("--top-k", type=_positive_int, default=0, help="0 = off")
    gp.add_argument("--top-p", type=float, default=1.0)
    gp.add_argument("--repetition-penalty", type=float, default=1.0)
    gp.add_argument("--seed", type=_positive_int, default=0)
    gp.add_argument("--max-context", type=_positive_int, default=None,
                    help="KV cache size in tokens (default: min(model limit, 4096))")
    gp.add_argument("--json", action="store_true", help="print one JSON object instead")

    bp = sub.add_parser("bench", help="decode / prefill speed, bandwidth, dispatches per token")
    bp.add_argument("model", type=Path)
    bp.add_argument("--quick", action="store_true", help="small contexts (CPU adapters, CI)")
    bp.add_argument("--vs-torch", action="store_true",
                    help="also time HF transformers bf16 on the same GPU (needs torch + CUDA)")
    bp.add_argument("--json", action="store_true")
    bp.add_argument("--profile", action="store_true",
                    help="also the GPU time of each op of the prefill and decode programs")

    qp = sub.add_parser("quality", help="perplexity, top-1 agreement and KL of packed models "
                                           "against the first (reference) packing")
    qp.add_argument("models", type=Path, nargs="+",
                    help="the reference packing first (e.g. f32), then the others")
    qp.add_argument("--text", type=Path, default=None,
                    help="UTF-8 text to score (default: the held-out Shakespeare split)")
    qp.add_argument("--tokens", type=_positive_int, default=2048, help="text tokens scored")
    qp.add_argument("--window", type=_positive_int, default=1024,
                    help="tokens per window (capped at the model's context)")
    qp.add_argument("--numpy", action="store_true",
                    help="run the models with the numpy reference instead of the GPU")
    qp.add_argument("--json", action="store_true")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    try:
        a = ap.parse_args(argv)
    except SystemExit as e:  # argparse already printed one usage line
        return 2 if e.code else 0
    try:
        if a.cmd == "generate":
            run_generate(a.model, a.prompt, a.chat, a.max_tokens, a.temperature, a.top_k, a.top_p,
                         a.repetition_penalty, a.seed, a.max_context, a.json)
        elif a.cmd == "bench":
            from .bench import run_bench
            run_bench(a.model, quick=a.quick, vs_torch=a.vs_torch, as_json=a.json,
                      profile=a.profile)
        else:
            from .quality import read_text, run_quality
            run_quality(a.models, n_tokens=a.tokens, as_json=a.json,
                        text=None if a.text is None else read_text(a.text), window=a.window,
                        numpy=a.numpy)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
