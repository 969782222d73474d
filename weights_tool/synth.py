"""Synthetic Llama-3-family checkpoints: HF-format folders written with numpy + safetensors (no torch).

Random weights at a realistic scale (HF's initializer_range 0.02 for projections and embeddings, norm
weights near 1 with a little noise so that a kernel that ignores them is caught). Every later issue's
tests and benchmarks use these. The same seed gives the same bytes (numpy's PCG64 stream), and
``tests/golden`` records the sha256 of each file it was made from, so drift is detected, not hidden.

    python -m weights_tool synth OUT --preset llama3-tiny [--seed 0] [--dtype f32|bf16|f16]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from modelfmt.config import ModelConfig
from modelfmt.presets import PRESETS

_LLAMA3_TEMPLATE_FALLBACK = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")

_DTYPES = ("f32", "bf16", "f16")
_SHARD_BYTES = 2 << 30  # split big checkpoints like HF does (model-0000x-of-0000y.safetensors)


def hf_config(preset: str, overrides: dict | None = None) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    d = dict(PRESETS[preset])
    d.update(overrides or {})
    d.update(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
             rms_norm_eps=d.get("rms_norm_eps", 1e-5), attention_bias=False, mlp_bias=False,
             initializer_range=0.02, torch_dtype="float32")
    if d.get("rope_scaling") is None:
        d.pop("rope_scaling", None)
    ModelConfig.from_hf(d)  # validate now: a bad override fails before any file is written
    return d


def _tensor_specs(cfg: ModelConfig):
    """(HF name, shape, kind) in file order; kind "norm" or "matrix"."""
    h, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    yield "model.embed_tokens.weight", (v, h), "matrix"
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,), "norm"
        yield p + "self_attn.q_proj.weight", (cfg.q_dim, h), "matrix"
        yield p + "self_attn.k_proj.weight", (cfg.kv_dim, h), "matrix"
        yield p + "self_attn.v_proj.weight", (cfg.kv_dim, h), "matrix"
        yield p + "self_attn.o_proj.weight", (h, cfg.q_dim), "matrix"
        yield p + "post_attention_layernorm.weight", (h,), "norm"
        yield p + "mlp.gate_proj.weight", (f, h), "matrix"
        yield p + "mlp.up_proj.weight", (f, h), "matrix"
        yield p + "mlp.down_proj.weight", (h, f), "matrix"
    yield "model.norm.weight", (h,), "norm"
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", (v, h), "matrix"


def _random(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def _encode(a: np.ndarray, dtype: str) -> tuple[str, bytes]:
    if dtype == "f32":
        return "F32", a.astype("<f4").tobytes()
    if dtype == "f16":
        return "F16", a.astype("<f2").tobytes()
    # bf16: round to nearest even on the top 16 bits of the f32 pattern
    u = a.astype("<f4").view("<u4").astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return "BF16", u.astype("<u2").tobytes()


def _write_safetensors(path: Path, entries: list[tuple[str, str, tuple, bytes]]) -> None:
    """Write one safetensors file from (name, dtype, shape, raw bytes), streaming the data."""
    header, off = {}, 0
    for name, dt, shape, raw in entries:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as fh:
        fh.write(len(hb).to_bytes(8, "little"))
        fh.write(hb)
        for *_, raw in entries:
            fh.write(raw)


def synth(out: str | Path, preset: str, seed: int = 0, dtype: str = "f32",
          overrides: dict | None = None, tokenizer_dir: str | Path | None = None,
          force: bool = False) -> Path:
    """Write an HF-format folder for ``preset`` (plus config ``overrides``) into ``out``.

    Tensors are generated and written one shard at a time, so memory stays near one shard.
    ``tokenizer_dir`` (default: the fetched Llama-3 tokenizer when the vocabulary is 128256)
    supplies tokenizer.json / tokenizer_config.json.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    d = hf_config(preset, overrides)
    cfg = ModelConfig.from_hf(d)
    tmp = out.with_name(out.name + ".tmp-synth")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)

    shards: list[list] = [[]]
    size = 0
    files: list[str] = []
    weight_map: dict[str, str] = {}

    def flush(last: bool) -> None:
        nonlocal size
        if not shards[-1]:
            return
        name = f"model-{len(files) + 1:05d}.safetensors"
        _write_safetensors(tmp / name, shards[-1])
        for e in shards[-1]:
            weight_map[e[0]] = name
        files.append(name)
        shards.append([])
        size = 0

    for name, shape, kind in _tensor_specs(cfg):
        dt, raw = _encode(_random(rng, shape, kind), dtype)
        if size and size + len(raw) > _SHARD_BYTES:
            flush(False)
        shards[-1].append((name, dt, shape, raw))
        size += len(raw)
    flush(True)

    if len(files) == 1:
        (tmp / files[0]).rename(tmp / "model.safetensors")
    else:
        n = len(files)
        renamed = {}
        for i, f in enumerate(files):
            new = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            (tmp / f).rename(tmp / new)
            renamed[f] = new
        total = sum((tmp / f).stat().st_size for f in renamed.values())
        (tmp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total},
             "weight_map": {k: renamed[v] for k, v in weight_map.items()}}, indent=2))

    (tmp / "config.json").write_text(json.dumps(d, indent=2))
    eos = d["eos_token_id"]
    (tmp / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": d["bos_token_id"], "eos_token_id": eos, "do_sample": True,
         "temperature": 0.6, "top_p": 0.9}, indent=2))
    _copy_tokenizer(tmp, cfg, tokenizer_dir)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _copy_tokenizer(tmp: Path, cfg: ModelConfig, tokenizer_dir) -> None:
    if tokenizer_dir is None and cfg.vocab_size == 128256:
        from weights_tool.fetch import data_path
        tokenizer_dir = data_path("llama3-tokenizer")
    if tokenizer_dir is None:
        return  # vocabularies other than Llama-3's get no tokenizer: ids-only tests
    tdir = Path(tokenizer_dir)
    shutil.copyfile(tdir / "tokenizer.json", tmp / "tokenizer.json")
    tc = tdir / "tokenizer_config.json"
    if tc.exists():
        conf = json.loads(tc.read_text())
    else:
        conf = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    conf.setdefault("chat_template", _LLAMA3_TEMPLATE_FALLBACK)
    (tmp / "tokenizer_config.json").write_text(json.dumps(conf, indent=2, ensure_ascii=False))


# ---- CLI ----
def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="write a random-weight HF checkpoint of a preset shape")
    p.add_argument("out", type=Path, help="output folder (HF format)")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=_DTYPES, default=None,
                   help="tensor dtype (default f32; bf16 for llama3-8b-shape)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=main)


def main(args) -> int:
    import sys
    import time
    dtype = args.dtype or ("bf16" if args.preset == "llama3-8b-shape" else "f32")
    t0 = time.perf_counter()
    try:
        out = synth(args.out, args.preset, seed=args.seed, dtype=dtype, force=args.force)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    nbytes = sum(f.stat().st_size for f in out.iterdir())
    print(f"synth: {args.preset} seed {args.seed} {dtype} -> {out} "
          f"({nbytes / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return 0
