"""``python -m driver generate|bench|sweep|quality``: the native command line. Native only.

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
                 max_tokens: int | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float | None = None, seed: int | None = None,
                 max_context: int | None = None, as_json: bool = False, out=sys.stdout,
                 err=sys.stderr, interactive: bool = False, system: str | None = None,
                 speculative: str | None = None, draft: Path | None = None,
                 draft_k: int | None = None, inp=sys.stdin) -> dict:
    """Load ``model`` and answer through ``driver.session.ChatSession`` (the one request path:
    options default to the manifest's ``generation`` section): ``prompt`` (raw text), ``chat``
    (one user message) or ``interactive`` (a conversation read line by line from ``inp``, the KV
    cache reused across turns). Streams the text to ``out`` (or prints one JSON object); speeds
    go to ``err``. Returns the (last) result."""
    from driver.native import load, load_draft
    from driver.session import ChatSession, resolve_options

    given = {"max_tokens": max_tokens, "temperature": temperature, "top_k": top_k,
             "top_p": top_p, "repetition_penalty": repetition_penalty, "seed": seed,
             "speculative": speculative, "draft_k": draft_k}
    resolve_options(None, given, 1 << 30)    # bad values refused before loading anything
    if sum(x is not None and x is not False for x in (prompt, chat, interactive or None)) != 1:
        raise BadOption("give exactly one of --prompt TEXT, --chat TEXT or --interactive")
    if speculative == "draft" and draft is None:
        raise BadOption("--speculative draft needs --draft DRAFT_MODEL")
    t0 = time.perf_counter()
    eng = load(model, max_context=max_context)
    dr = None
    if draft is not None:
        dr = load_draft(draft, eng)
    load_s = time.perf_counter() - t0
    sess = ChatSession(eng, draft=dr)
    head = [{"role": "system", "content": system}] if system else []
    if not interactive:
        req = ({"prompt": prompt} if prompt is not None else
               {"messages": head + [{"role": "user", "content": chat}]})
        res = _one(sess, {**req, "options": given}, as_json, out, err)
    else:
        res = {}
        for line in inp:
            text = line.rstrip("\n")
            if not text.strip():
                break
            try:
                sess.say(text, system=system, on_text=lambda p: (out.write(p), out.flush()),
                         **{k: v for k, v in given.items() if v is not None})
            except USER_ERRORS as e:     # not kept in the conversation; the next line works
                err.write(f"error: {e}\n")
                continue
            out.write("\n")
            res = _result(sess)
            err.write(_stats_line(res, eng) + "\n")
    res.update(load_s=load_s, dispatches_per_token=eng.dispatches_per_token,
               adapter=eng.gpu.info.get("description", ""))
    if as_json:
        out.write(json.dumps(res) + "\n")
    eng.close()
    return res


def _result(sess) -> dict:
    st = sess.last_stats
    dec_tok = max(0, st["completion_tokens"] - 1)
    return {"prompt_ids": list(sess.last_prompt_ids), "prefill_tokens": st["prompt_tokens"],
            "cached_tokens": st["cached_tokens"], "truncated_turns": st["truncated_turns"],
            "prefill_tok_s": st["prefill_tokens_per_s"] or None, "decode_tokens": dec_tok,
            "decode_tok_s": st["decode_tokens_per_s"] or None, "ttft_s": st["ttft_s"],
            "finish_reason": st["finish_reason"], **({"speculative": st["speculative"]}
                                                     if "speculative" in st else {})}


def _one(sess, req: dict, as_json: bool, out, err) -> dict:
    ids, pieces = [], []
    for t, piece in sess.stream(req):
        if t >= 0:
            ids.append(t)
        pieces.append(piece)
        if not as_json and piece:
            out.write(piece)
            out.flush()
    res = {**_result(sess), "ids": ids, "text": "".join(pieces)}
    if not as_json:
        out.write("\n")
        err.write(_stats_line(res, sess.engine) + "\n")
    return res


def _stats_line(res: dict, eng) -> str:
    line = (f"prefill: {res['prefill_tokens']} tokens ({res['cached_tokens']} cached), "
            f"{_fmt(res['prefill_tok_s'])} tok/s, first token {res['ttft_s']:.3f} s | decode: "
            f"{res['decode_tokens']} tokens, {_fmt(res['decode_tok_s'])} tok/s | "
            f"{res['finish_reason']}")
    if res["truncated_turns"]:
        line += f" | {res['truncated_turns']} oldest turn(s) left out"
    sp = res.get("speculative")
    if sp:
        line += (f" | speculative: {sp.get('accepted', 0)}/{sp.get('drafted', 0)} drafts "
                 "accepted")
    return line + f" | {eng.dispatches_per_token} dispatches/token | " + \
        eng.gpu.info.get("description", "")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _ctx_list(s: str) -> list[int]:
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"contexts must be integers >= 1, got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m driver",
                                 description="Llama-3 on WebGPU (native wgpu-py backend)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    gp = sub.add_parser("generate", help="generate text from a prompt, one chat message, or a "
                        "conversation (--interactive)")
    gp.add_argument("model", type=Path, help="packed model folder (manifest.json + shards)")
    src = gp.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="raw text to continue")
    src.add_argument("--chat", help="one user message, rendered with the model's chat template")
    src.add_argument("--interactive", action="store_true",
                     help="a conversation: one user message per line of stdin (empty line or "
                          "EOF ends); the KV cache is reused across turns")
    gp.add_argument("--system", help="system prompt (--chat, --interactive)")
    gp.add_argument("--max-tokens", type=_positive_int, default=None, help="default 256")
    gp.add_argument("--temperature", type=float, default=None,
                    help="0 = greedy; default: the model's generation config, else 0")
    gp.add_argument("--top-k", type=_positive_int, default=None, help="0 = off")
    gp.add_argument("--top-p", type=float, default=None)
    gp.add_argument("--repetition-penalty", type=float, default=None)
    gp.add_argument("--seed", type=_positive_int, default=None)
    gp.add_argument("--max-context", type=_positive_int, default=None,
                    help="KV cache size in tokens (default: min(model limit, 4096))")
    gp.add_argument("--speculative", choices=("off", "lookup", "draft"), default=None,
                    help="speculative decoding: prompt lookup, or a --draft model (same output)")
    gp.add_argument("--draft", type=Path, default=None,
                    help="draft model (same tokenizer) for --speculative draft")
    gp.add_argument("--draft-k", type=_positive_int, default=None,
                    help="drafted tokens verified per pass (default 4)")
    gp.add_argument("--json", action="store_true", help="print one JSON object instead")

    bp = sub.add_parser("bench", help="decode / prefill speed, bandwidth, dispatches per token")
    bp.add_argument("model", type=Path)
    bp.add_argument("--quick", action="store_true", help="small contexts (CPU adapters, CI)")
    bp.add_argument("--vs-torch", action="store_true",
                    help="also time HF transformers bf16 on the same GPU (needs torch + CUDA)")
    bp.add_argument("--json", action="store_true")
    bp.add_argument("--profile", action="store_true",
                    help="also the GPU time of each op of the prefill and decode programs "
                         "(with --speculative: of the verify pass per size and LM-head variant)")
    bp.add_argument("--count-only", action="store_true",
                    help="only the dispatches per decode token (default and previous decode "
                         "program), recorded on a null GPU: no GPU work, big shapes in seconds")
    bp.add_argument("--ttft", action="store_true",
                    help="instead: time to first token per turn of a ~3,000-token 10-turn chat "
                         "(KV cache reused) against turn 1 (driver/native/bench_session.py)")
    bp.add_argument("--speculative", action="store_true",
                    help="instead: speculative decoding tok/s and acceptance, extractive task "
                         "and free chat; plain / lookup / forced (all accepted) / rejected")
    bp.add_argument("--draft", type=Path, default=None,
                    help="with --speculative: also a draft model (same tokenizer)")
    bp.add_argument("--draft-k", type=_positive_int, default=4,
                    help="with --speculative: drafted tokens per verify pass (default 4)")
    bp.add_argument("--record-rounds", type=Path, default=None, metavar="FILE",
                    help="with --speculative: write prompt lookup's rounds (drafted, accepted) "
                         "per task to FILE (run it on a real model)")
    bp.add_argument("--replay-rounds", type=Path, default=None, metavar="FILE",
                    help="with --speculative: replay FILE's rounds on this model (mode "
                         "'replayed': a real model's acceptance pattern at this model's cost)")
    bp.add_argument("--lookup-only", action="store_true",
                    help="with --speculative: only plain and lookup, no pass costs (a quick "
                         "--record-rounds on a CPU adapter)")

    sp = sub.add_parser("sweep", help="decode candidates (DecodeOptions, depth) on one loaded "
                                      "model per shape, beside the copy roofline")
    sp.add_argument("models", type=Path, nargs="+",
                    help="packed model folders or synth:PRESET:QUANT, measured in turn")
    sp.add_argument("--quick", action="store_true", help="few candidates, small contexts (CI)")
    sp.add_argument("--ctx", type=_ctx_list, default=None,
                    help="comma-separated decode contexts (default 128,384,4096; quick 16,600)")
    sp.add_argument("--tokens", type=_positive_int, default=None,
                    help="decode steps per measurement (default 96; quick 8)")
    sp.add_argument("--rounds", type=_positive_int, default=None,
                    help="interleaved rounds, best kept (default 3; quick 2)")
    sp.add_argument("--only", action="append", default=None, metavar="NAME",
                    help="only this candidate (repeatable; names as the table prints them)")
    sp.add_argument("--count-only", action="store_true",
                    help="only dispatches per token of each candidate (null GPU, no GPU work)")
    sp.add_argument("--out", type=Path, default=None, help="write all results as JSON here")
    sp.add_argument("--json", action="store_true", help="one JSON line per model on stdout")

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
                         a.repetition_penalty, a.seed, a.max_context, a.json,
                         interactive=a.interactive, system=a.system, speculative=a.speculative,
                         draft=a.draft, draft_k=a.draft_k)
        elif a.cmd == "bench" and (a.ttft or a.speculative):
            from .bench_session import run_session_bench
            run_session_bench(a.model, speculative=a.speculative, ttft=a.ttft, quick=a.quick,
                              profile=a.profile, draft=a.draft, k=a.draft_k, as_json=a.json,
                              record_rounds=a.record_rounds, replay_rounds=a.replay_rounds,
                              lookup_only=a.lookup_only)
        elif a.cmd == "bench":
            from .bench import run_bench
            run_bench(a.model, quick=a.quick, vs_torch=a.vs_torch, as_json=a.json,
                      profile=a.profile, count_only=a.count_only)
        elif a.cmd == "sweep":
            from .sweep import run_sweep
            if a.out is not None and not a.out.parent.is_dir():
                raise BadOption(f"--out {a.out}: folder {a.out.parent} does not exist")
            run_sweep([str(m) for m in a.models], quick=a.quick, out_path=a.out, ctxs=a.ctx,
                      tokens=a.tokens, rounds=a.rounds, names=a.only, count_only=a.count_only,
                      as_json=a.json)
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
