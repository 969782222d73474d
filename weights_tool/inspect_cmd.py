"""inspect: print the config, the tensor table and the sizes of a packed OUT or of a SRC.

``inspect_text(path) -> str``: a packed model is described from its manifest alone; a source (HF
folder or .gguf) from its headers, without reading any tensor data.
"""

from __future__ import annotations

import math
from pathlib import Path

from modelfmt import manifest

from .errors import PackError
from .source import open_source

# Bytes per element of source storage types (GGUF blocks: block bytes / block elements).
_SRC_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "Q8_0": 34 / 32, "Q4_0": 18 / 32, "Q4_1": 20 / 32,
              "Q5_0": 22 / 32, "Q5_1": 24 / 32, "Q2_K": 84 / 256, "Q3_K": 110 / 256,
              "Q4_K": 144 / 256, "Q5_K": 176 / 256, "Q6_K": 210 / 256, "Q8_K": 292 / 256}


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _config_lines(cfg: dict) -> list[str]:
    return [f"  {k}: {v}" for k, v in cfg.items()]


def inspect_text(path) -> str:
    p = Path(path)
    if p.is_dir() and (p / "manifest.json").exists():
        return _packed(p)
    return _source(p)


def _packed(p: Path) -> str:
    m, err = manifest.read(p)
    if err:
        raise PackError(p / "manifest.json", err.split(": ", 1)[-1], "Re-pack the model")
    try:
        lines = [f"packed model {m.get('name')!r} ({p}), format {m.get('format')} "
                 f"v{m.get('format_version')}", "config:"]
        lines += _config_lines(m.get("config", {}))
        q = m.get("quant", {})
        lines.append(f"quant: {q.get('scheme')} group {q.get('group_size')} "
                     f"(source {q.get('source')})")
        lines.append(f"{'tensor':<34} {'dtype':<6} {'source':<6} {'shape':<16} {'bytes':>12} "
                     f"{'blocks':>6} {'max err':>10}")
        for name, e in m.get("tensors", {}).items():
            if "alias" in e:
                lines.append(f"{name:<34} -> alias of {e['alias']}")
                continue
            nbytes = sum(pt["nbytes"] for b in e["blocks"] for pt in b["parts"].values())
            err = e.get("max_abs_err")
            lines.append(f"{name:<34} {e['dtype']:<6} {e.get('src', '?'):<6} "
                         f"{str(e['shape']):<16} {nbytes:>12} "
                         f"{len(e['blocks']):>6} {'' if err is None else f'{err:.3g}':>10}")
        shards = m.get("shards", [])
        st, req = m.get("stats", {}), m.get("requirements", {})
        lines.append(f"shards: {len(shards)}, {_mb(sum(s['nbytes'] for s in shards))}; "
                     f"largest part {req.get('max_storage_buffer_binding_size')} bytes; "
                     f"worst error {st.get('max_abs_err')} in {st.get('worst_tensor')}")
        lines.append(f"tokenizer files: {', '.join(m.get('tokenizer', {}).get('files', []))}")
        lines.append(f"generation: {m.get('generation')}")
    except (KeyError, TypeError, AttributeError) as ex:
        raise PackError(p / "manifest.json", f"malformed manifest ({type(ex).__name__}: {ex})",
                        "Run `python -m weights_tool verify` on it") from None
    return "\n".join(lines)


def _source(p: Path) -> str:
    with open_source(p) as src:
        lines = [f"{src.kind} source {src.name!r} ({p})", "config:"]
        lines += _config_lines(src.config.to_json())
        lines.append(f"{'tensor':<34} {'dtype':<6} {'shape':<16} {'bytes':>12}")
        total = 0.0
        for canon, shape, dt in src.tensor_info():
            per = _SRC_BYTES.get(dt)
            n = math.prod(shape) * per if per else None
            total += n or 0
            lines.append(f"{canon:<34} {dt:<6} {str(list(shape)):<16} "
                         f"{'?' if n is None else int(n):>12}")
        if src.config.tie_word_embeddings:
            lines.append(f"{'output':<34} -> tied to tok_embeddings")
        lines.append(f"weights: {_mb(total)}; tokenizer files: "
                     f"{', '.join(sorted(src.tokenizer_files())) or 'none'}")
    return "\n".join(lines)
