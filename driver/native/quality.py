"""``python -m driver quality F32_MODEL OTHER_MODEL...``: what quantization costs. Native only.

For a fixed random token sequence, every model's logits at every position are compared with the
first model's (the f32 packing): top-1 agreement (share of positions with the same argmax), mean
KL(p_first || p_other) in nats, and greedy agreement (length of the common prefix of 32 greedy
tokens from the sequence's first 8 tokens, no stop ids).
"""

from __future__ import annotations

import json
import sys

N_GREEDY = 32
GREEDY_PREFIX = 8


def compare(base, other) -> dict:
    """base / other: (n, vocab) float32 logits."""
    import numpy as np

    def logp(z):
        z = z.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lp, lq = logp(base), logp(other)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return {"top1_agreement": float((base.argmax(-1) == other.argmax(-1)).mean()),
            "mean_kl": float(kl.mean()), "max_kl": float(kl.max())}


def common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def run_quality(models, n_tokens: int = 64, as_json: bool = False, out=sys.stdout,
                seed: int = 0, backend=None) -> list[dict]:
    import numpy as np

    from driver.native import load
    from driver.sampler import BadOption

    if len(models) < 2:
        raise BadOption("give the f32 model first and at least one other model")
    if n_tokens < GREEDY_PREFIX:
        raise BadOption(f"--tokens must be at least {GREEDY_PREFIX}")
    rows, base_logits, base_greedy, vocab = [], None, None, None
    for i, m in enumerate(models):
        eng = load(m, backend=backend, max_context=max(n_tokens, GREEDY_PREFIX + N_GREEDY),
                          kv="f32")
        if vocab is None:
            vocab = eng.cfg.vocab_size
            ids = np.random.default_rng(seed).integers(0, vocab, n_tokens).tolist()
        elif eng.cfg.vocab_size != vocab:
            raise BadOption(f"{m}: vocabulary {eng.cfg.vocab_size} differs from the first "
                            f"model's {vocab}")
        logits = eng.logits(ids)
        greedy = list(eng.generate(ids[:GREEDY_PREFIX], N_GREEDY, stop_ids=()))
        row = {"model": str(m), "quant": eng.manifest.get("quant", {}).get("scheme")}
        if i == 0:
            base_logits, base_greedy = logits, greedy
        else:
            row.update(compare(base_logits, logits))
            row["greedy_common_prefix"] = common_prefix(base_greedy, greedy)
            row["greedy_tokens"] = N_GREEDY
        rows.append(row)
        eng.close()
    if as_json:
        out.write(json.dumps(rows) + "\n")
    else:
        for r in rows[1:]:
            out.write(f"{r['quant']:>5} {r['model']}: top-1 agreement "
                      f"{100 * r['top1_agreement']:.1f}%, mean KL {r['mean_kl']:.2e} nats "
                      f"(max {r['max_kl']:.2e}), greedy "
                      f"{r['greedy_common_prefix']}/{r['greedy_tokens']} identical\n")
    return rows
