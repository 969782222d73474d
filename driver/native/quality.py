"""``python -m driver quality REF MODEL... [--text FILE] [--tokens N]``: what a packing costs.
Native only.

Every model scores the same token sequence: the first N tokens of a text (default the held-out
split of the Shakespeare corpus the set-up fetches: weights_tool.corpus, never the calibration
split), tokenized with the reference model's tokenizer and cut into windows of at most the
model's context (``--window``), each window a fresh sequence that starts with the tokenizer's
special prefix (BOS where the model has one). Per model, against the first (reference) model:

  perplexity        exp(mean negative log-likelihood of each next text token)
  NLL delta, SE     mean over the positions of (the model's NLL - the reference's) = log of the
                    perplexity ratio, and its paired standard error std(delta) / sqrt(n): the
                    noise bar of a perplexity gap (positions are treated as independent, so it
                    is a lower bound where neighbouring positions' errors correlate)
  top-1 agreement   share of positions whose argmax equals the reference's
  KL mean / p99     KL(p_ref || p_model) in nats per position: mean and 99th percentile
  greedy            common prefix of 32 greedy tokens from the sequence's first 8 tokens
  bits/weight, MB   stored bits per matrix element (scales included) and the model's bytes

The reference's logits are kept in a temporary float32 file (N x vocab), not in memory.
``ids`` (tests) replaces the text by a given token sequence, perplexity then being over it.
``numpy=True`` (``--numpy``) runs every model with the numpy reference forward
(driver/native/reference.py) instead of the GPU: same figures, no adapter needed.
"""

from __future__ import annotations

import json
import sys
import tempfile

N_GREEDY = 32
GREEDY_PREFIX = 8
DEFAULT_TOKENS = 2048
DEFAULT_WINDOW = 1024


def _logp(z):
    import numpy as np
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def compare(base, other) -> dict:
    """base / other: (n, vocab) float32 logits -> top-1 agreement and KL figures."""
    import numpy as np
    lp, lq = _logp(base), _logp(other)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    same = base.argmax(-1) == other.argmax(-1)
    return {"top1_agreement": float(same.mean()), "same": same,
            "mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "kl": kl}


def common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def text_windows(tok, text: str, n_tokens: int, window: int) -> tuple[list[list[int]], int]:
    """(windows of ids, prefix length): ``n_tokens`` text tokens after the tokenizer's special
    prefix, ``window - prefix`` per window. Raises BadOption when the text is too short."""
    from driver.sampler import BadOption
    prefix = tok.encode("", add_special_tokens=True)
    body = window - len(prefix)
    if body < 2:
        raise BadOption(f"--window {window} leaves no room after the {len(prefix)}-token prefix")
    ids: list[int] = []
    take = n_tokens * 8                   # ~4 characters a token: tokenize only what is needed
    while True:
        ids = tok.encode(text[:take], add_special_tokens=False)
        if len(ids) > n_tokens or take >= len(text):
            break
        take *= 2
    if len(ids) < n_tokens:
        raise BadOption(f"the text holds {len(ids)} tokens, fewer than --tokens {n_tokens}; "
                        "give a longer --text or lower --tokens")
    ids = ids[:n_tokens]
    return [prefix + ids[i:i + body] for i in range(0, len(ids), body)], len(prefix)


def read_text(path) -> str:
    """A UTF-8 text file to score; BadOption (one line) when missing, unreadable or empty."""
    from pathlib import Path

    from driver.sampler import BadOption
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadOption(f"{p}: text file not found; give an existing UTF-8 file") from None
    except UnicodeDecodeError as e:
        raise BadOption(f"{p}: not UTF-8 text (byte {e.start}); give a UTF-8 file") from None
    except OSError as e:
        raise BadOption(f"{p}: cannot read the text ({e.strerror or e})") from None
    if not text.strip():
        raise BadOption(f"{p}: the text file is empty; give a file with some text in it")
    return text


def _heldout() -> str:
    """The held-out Shakespeare split (weights_tool.corpus: it owns the fetched data)."""
    from weights_tool.corpus import heldout_text
    from weights_tool.errors import PackError

    from driver.sampler import BadOption
    try:
        return heldout_text()
    except PackError as e:
        raise BadOption(str(e)) from None


class _NumpyModel:
    """The slice of Engine that quality uses, on driver.native.reference (numpy)."""

    def __init__(self, folder):
        from pathlib import Path

        from .reference import Reference
        from driver.sampler import BadOption
        self.folder = Path(folder)
        if not (self.folder / "manifest.json").is_file():
            raise BadOption(f"{folder}: no manifest.json; give a packed model folder")
        self.ref = Reference.load(folder)
        self.cfg, self.manifest = self.ref.cfg, self.ref.manifest

    def logits(self, ids):
        return self.ref.logits(ids)

    def generate(self, ids, n, stop_ids=()):
        return self.ref.greedy(ids, n)

    def tokenizer(self):
        from driver.tokenizer import Tokenizer
        return Tokenizer.from_file(self.folder / "tokenizer.json")

    def close(self):
        self.ref = None


def _bits_per_weight(manifest: dict) -> float:
    from modelfmt.manifest import bits_per_weight
    return bits_per_weight(manifest.get("tensors", {}))


def run_quality(models, n_tokens: int = DEFAULT_TOKENS, as_json: bool = False, out=sys.stdout,
                backend=None, text: str | None = None, window: int = DEFAULT_WINDOW,
                ids: list[int] | None = None, numpy: bool = False) -> list[dict]:
    import numpy as np

    from driver.native import load
    from driver.sampler import BadOption

    if len(models) < 2:
        raise BadOption("give the reference model first and at least one other model")
    if n_tokens < GREEDY_PREFIX + 2:
        raise BadOption(f"--tokens must be at least {GREEDY_PREFIX + 2}")
    rows, vocab, wins, ref, base_greedy, base_nll = [], None, None, None, None, None
    tmp = tempfile.TemporaryDirectory(prefix="quality-")
    try:
        for i, m in enumerate(models):
            eng = _NumpyModel(m) if numpy else load(
                m, backend=backend, max_context=max(window, GREEDY_PREFIX + N_GREEDY), kv="f32")
            if i == 0:
                vocab = eng.cfg.vocab_size
                window = min(window, eng.cfg.max_position_embeddings)
                if ids is not None:
                    wins, skip = [list(ids[j:j + window]) for j in range(0, len(ids), window)], 0
                else:
                    if text is None:
                        text = _heldout()
                    wins, skip = text_windows(eng.tokenizer(), text, n_tokens, window)
                # positions scored: those whose next token is a text token (not the prefix)
                pos = [(w, t) for w, win in enumerate(wins) for t in range(max(skip, 1) - 1,
                                                                           len(win) - 1)]
                ref = np.lib.format.open_memmap(f"{tmp.name}/ref.npy", "w+", np.float32,
                                                (len(pos), vocab))   # (positions, vocab)
            elif eng.cfg.vocab_size != vocab:
                raise BadOption(f"{m}: vocabulary {eng.cfg.vocab_size} differs from the first "
                                f"model's {vocab}")
            nll, kl, same, agree, k = [], [], [], 0, 0
            for w, win in enumerate(wins):
                lg = eng.logits(win)                                    # (len(win), vocab)
                ts = [t for ww, t in pos if ww == w]
                z = lg[ts]                                              # (scored, vocab)
                lp = _logp(z)
                nll.append(-lp[np.arange(len(ts)), [win[t + 1] for t in ts]])
                if i == 0:
                    ref[k:k + len(ts)] = z
                else:
                    c = compare(np.asarray(ref[k:k + len(ts)]), z)
                    kl.append(c["kl"])
                    same.append(c["same"])
                    agree += c["top1_agreement"] * len(ts)
                k += len(ts)
            first = wins[0][:GREEDY_PREFIX]
            greedy = list(eng.generate(first, N_GREEDY, stop_ids=()))
            man = eng.manifest
            row = {"model": str(m), "quant": (man.get("quant") or {}).get("scheme"),
                   "method": (man.get("quant") or {}).get("method", "rtn"),
                   "bits_per_weight": _bits_per_weight(man),
                   "bytes": sum(s["nbytes"] for s in man.get("shards", [])),
                   "tokens": len(pos), "perplexity": float(np.exp(np.concatenate(nll).mean()))}
            nll = np.concatenate(nll)                                   # (positions,)
            row["_nll"] = nll              # per position, for callers (not printed)
            if i == 0:
                base_greedy, base_nll = greedy, nll
            else:
                delta = nll - base_nll                                  # paired per position
                row.update(nll_delta=float(delta.mean()),
                           nll_delta_se=float(delta.std(ddof=1) / np.sqrt(len(delta))))
                kl = np.concatenate(kl)
                row["_kl"], row["_same"] = kl, np.concatenate(same)
                row.update(top1_agreement=agree / k, mean_kl=float(kl.mean()),
                           p99_kl=float(np.quantile(kl, 0.99)), max_kl=float(kl.max()),
                           greedy_common_prefix=common_prefix(base_greedy, greedy),
                           greedy_tokens=N_GREEDY)
            rows.append(row)
            eng.close()
    finally:
        ref = None
        tmp.cleanup()
    _print(rows, as_json, out)
    return rows


def _print(rows, as_json, out) -> None:
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    if as_json:
        out.write(json.dumps(rows) + "\n")
        return
    out.write(f"{'model':<40} {'quant':>5} {'method':>8} {'bits/w':>6} {'MB':>7} {'ppl':>8} "
              f"{'top-1':>6} {'KL mean':>8} {'KL p99':>8} {'greedy':>6} {'dNLL +- SE':>16}\n")
    for i, r in enumerate(rows):
        cmp = ("  (reference)" if i == 0 else
               f" {100 * r['top1_agreement']:5.1f}% {r['mean_kl']:8.4f} {r['p99_kl']:8.4f} "
               f"{r['greedy_common_prefix']:>3}/{r['greedy_tokens']} "
               f"{r['nll_delta']:+8.4f} +-{r['nll_delta_se']:.4f}")
        out.write(f"{r['model'][-40:]:<40} {r['quant'] or '?':>5} {r['method']:>8} "
                  f"{r['bits_per_weight']:6.2f} {r['bytes'] / 1e6:7.1f} {r['perplexity']:8.3f}"
                  f"{cmp}\n")
    out.write(f"{rows[0]['tokens']} scored positions\n")
