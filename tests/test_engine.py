"""driver.Engine on the GPU (lavapipe in CI) against the numpy reference and the HF goldens.

Tiny random checkpoints are written with numpy + safetensors (tests/_checkpoints.py) and packed by
weights_tool; driver.native.reference decodes the packed bytes independently and runs the plain math.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu-py is not installed")

from driver.engine import BadOption, ContextOverflow, ModelError  # noqa: E402
from driver.native import load  # noqa: E402
from driver.native.reference import Reference  # noqa: E402

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkpoints import write_hf  # noqa: E402

CFG = dict(num_hidden_layers=3, vocab_size=256, hidden_size=64, intermediate_size=128,
           num_attention_heads=4, num_key_value_heads=2)


def _pack(tmp: Path, quant: str, **over) -> Path:
    from weights_tool.pack import pack
    hf = tmp / f"hf-{quant}"
    if not hf.exists():
        write_hf(hf, seed=3, **{**CFG, **over})
    out = tmp / f"m-{quant}"
    pack(hf, out, quant=quant, uniform=True, progress=False)   # every matrix in ``quant``'s kernels
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    return {q: _pack(tmp, q) for q in ("f32", "q4_0")}


@pytest.fixture(scope="module")
def f32_engine(models, backend):
    # chunk 16: a 40-token prompt takes three prefill chunks
    return load(models["f32"], backend=backend, max_context=96, kv="f32", chunk=16)


@pytest.fixture(scope="module")
def q4_engine(models, backend):
    return load(models["q4_0"], backend=backend, max_context=96, kv="f16", chunk=16)


def _ids(n, seed=0, vocab=256):
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def _rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_f32_logits_match_reference(f32_engine, models, mode):
    ids = _ids(40)
    ref = Reference.load(models["f32"]).logits(ids)
    got = f32_engine.logits(ids, mode=mode)
    assert got.shape == ref.shape == (40, 256)
    assert _rel_err(got, ref) < 1e-3


def test_q4_0_f16kv_logits_match_reference(q4_engine, models):
    ids = _ids(40, 1)
    ref = Reference.load(models["q4_0"]).logits(ids)  # same dequantized weights, f32 math
    # f16 KV cache rounding (rel 5e-4 per element) is the only loss: a few 1e-3 of max|logit|
    assert _rel_err(q4_engine.logits(ids), ref) < 5e-3
    assert _rel_err(q4_engine.logits(ids, mode="decode"), ref) < 5e-3


def test_greedy_matches_reference_and_is_deterministic(f32_engine, models):
    prompt = _ids(20, 2)
    ref = Reference.load(models["f32"]).greedy(prompt, 10)
    a = list(f32_engine.generate(prompt, 10, stop_ids=()))
    b = list(f32_engine.generate(prompt, 10, stop_ids=()))
    assert a == b == ref


@pytest.mark.parametrize("depth", [2, 3, 4, 8])
def test_pipelined_same_ids_as_unpipelined(q4_engine, depth):
    prompt = _ids(17, 3)
    one = list(q4_engine.generate(prompt, 24, stop_ids=(), depth=1))
    assert list(q4_engine.generate(prompt, 24, stop_ids=(), depth=depth)) == one
    assert len(one) == 24


def test_stop_id_ends_generation_without_yielding_it(q4_engine):
    prompt = _ids(9, 4)
    full = list(q4_engine.generate(prompt, 12, stop_ids=()))
    stop = full[5]
    first = full.index(stop)
    got = list(q4_engine.generate(prompt, 12, stop_ids=(stop,)))
    assert got == full[:first]
    assert q4_engine.last_stats["stopped"] == "stop"


def test_sampling_seeded(q4_engine):
    prompt = _ids(9, 5)
    kw = dict(temperature=1.0, top_k=50, top_p=0.9, seed=7, stop_ids=())
    a = list(q4_engine.generate(prompt, 16, **kw))
    assert a == list(q4_engine.generate(prompt, 16, **kw))
    assert all(0 <= t < 256 for t in a)
    b = list(q4_engine.generate(prompt, 16, **{**kw, "seed": 8}))
    assert a != b  # 16 draws from a near-flat distribution of a random model: never all equal


def test_context_overflow_before_gpu_work(q4_engine):
    with pytest.raises(ContextOverflow, match="exceeds the context of 96"):
        next(iter(q4_engine.generate(_ids(90), 7)))
    assert len(list(q4_engine.generate(_ids(90), 6, stop_ids=()))) == 6


def test_bad_options(q4_engine):
    for kw in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=-2), dict(seed=-1)):
        with pytest.raises(BadOption):
            next(iter(q4_engine.generate(_ids(4), 4, **kw)))


def test_cancellation_between_tokens(q4_engine):
    prompt = _ids(8, 6)
    full = list(q4_engine.generate(prompt, 10, stop_ids=()))
    it = q4_engine.generate(prompt, 10, stop_ids=())
    got = [next(it), next(it)]
    it.close()                      # generator close: pending steps drained, GPU state reusable
    assert got == full[:2]
    out = []
    for t in q4_engine.generate(prompt, 10, stop_ids=()):
        out.append(t)
        if len(out) == 3:
            q4_engine.cancel()      # the flag stops before the next token is yielded
    assert out == full[:3]
    assert list(q4_engine.generate(prompt, 10, stop_ids=())) == full


def test_decode_dispatch_count(q4_engine):
    # the native decode program (decode_options.NATIVE): embed, per layer qkv_rope_decode
    # (attention RMSNorm fused) + split-K attention_decode + attention_combine + wo (adds into
    # the residual) + gate_up (ffn RMSNorm fused) + w2 (adds into the residual), then the final
    # RMSNorm, one LM-head block, sample (candidates) + sample_select; on a GPU with packed
    # integer dot products (lavapipe has them) also quant_x before qkv, wo, gate_up, w2 and the
    # LM head (DecodeOptions.xq: the uniform q4_0 model's every projection takes int8 x)
    assert q4_engine.graph.caps.packed_dot
    assert q4_engine.dispatches_per_token == 1 + 6 * 3 + 1 + 1 + 2 + (4 * 3 + 1)
    assert q4_engine.dispatches_at(96) == q4_engine.dispatches_per_token


@pytest.mark.parametrize("mode", ["f32", "q4_0"])
def test_decode_program_variants_agree(f32_engine, q4_engine, models, mode):
    """Every DecodeOptions records the same function: split-K attention + combine against the
    one-pass kernel (a threshold inside the 40-token sequence, so both paths and the switch
    run; tiles of 16 so the one pass walks several), the LM head with and without the fused
    final RMSNorm, a decode kernel knob. Logits agree to float rounding (the int8-x q4_0
    path quantizes differently scaled inputs: measured 3e-5 of max |logit| on lavapipe) and
    the reference holds for each; dispatch counts per context follow the options."""
    from driver.decode_options import NATIVE
    from driver.graph import DecodeOptions
    eng = f32_engine if mode == "f32" else q4_engine
    ids = _ids(40, 1)
    ref = Reference.load(models[mode]).logits(ids)
    base = eng.logits(ids, mode="decode")
    variants = [DecodeOptions(),                       # the page's: fewest dispatches
                DecodeOptions(short_ctx=20, short_wg=16),
                DecodeOptions(short_ctx=24, head_norm=False,
                              knobs=DecodeOptions.knobs_of({"matvec": {"r": 2}, "head": {"r": 4},
                                                            "attention_decode": {"wg": 32}})),
                DecodeOptions(short_ctx=0, head_norm=False, xq=False),   # NATIVE without quant_x
                # quant_x only for the inputs read by >= 16384 weights: gate_up's and the head's
                DecodeOptions(short_ctx=0, head_norm=False, xq_min_weights=16384)]
    try:
        for opts in variants:
            eng.set_decode(opts)
            got = eng.logits(ids, mode="decode")
            assert _rel_err(got, base) < (1e-5 if mode == "f32" else 2e-4), opts
            assert _rel_err(got, ref) < (1e-3 if mode == "f32" else 5e-3), opts
            if not opts.xq:   # quant_x's int8 x is the kernels' own: the very same logits
                assert np.array_equal(got, base)
            short = opts.short_ctx
            fused_head = opts.head_norm
            layers = CFG["num_hidden_layers"]
            # quant_x where the kernels take int8 x (the uniform q4_0 model on a GPU with packed
            # dot products): before qkv, wo, gate_up and w2 of each layer and before the head,
            # for the inputs whose kernels read >= xq_min_weights weights (the page's default
            # threshold is above all of this tiny model's)
            H, F, V = CFG["hidden_size"], CFG["intermediate_size"], CFG["vocab_size"]
            hd = H // CFG["num_attention_heads"]
            qkv = H * hd * (CFG["num_attention_heads"] + 2 * CFG["num_key_value_heads"])
            n_xq = 0
            if opts.xq and mode != "f32" and eng.graph.caps.packed_dot:
                n_xq = layers * sum(w >= opts.xq_min_weights for w in (qkv, H * H, 2 * F * H, H * F))
                n_xq += V * H >= opts.xq_min_weights
            if opts.xq_min_weights == 16384 and mode != "f32":
                assert n_xq == layers + 1   # gate_up's and the head's
            n_short = 1 + 5 * layers + (0 if fused_head else 1) + 1 + 2 + n_xq
            for ctx in (1, 40):     # one pass while ctx <= short_ctx, the split-K pair past it
                assert eng.dispatches_at(ctx) == n_short + (0 if ctx <= short else layers)
        prompt = _ids(17, 3)
        assert list(eng.generate(prompt, 16, stop_ids=())) == \
            list(eng.generate(prompt, 16, stop_ids=(), depth=1))
    finally:
        eng.set_decode(NATIVE)
    assert np.array_equal(eng.logits(ids, mode="decode"), base)


def test_prefill_split_attention_after_a_cached_prefix(models, backend, monkeypatch):
    """A chunk after a long cached prefix runs attention_prefill's split variant + combine
    (driver.prefill_attention, SPLIT_KEYS lowered to 16 so that the 16-row chunk at position 64
    takes it): the logits of every position agree with the one-pass run's to f32 round-off (the
    splits' partials are merged in another order), the reference holds, and the program of a
    chunk at position 0 is the one-pass kernel alone."""
    import driver.prefill_attention as pa
    ids = _ids(80, 5)
    one = load(models["f32"], backend=backend, max_context=96, kv="f32", chunk=16)
    base = one.logits(ids, mode="prefill")
    monkeypatch.setattr(pa, "SPLIT_KEYS", 16)
    eng = load(models["f32"], backend=backend, max_context=96, kv="f32", chunk=16)
    samp = {"temperature": 0.0}
    # splits are whole tiles of keys (the kernel's TK): one pass at positions 0 and 16 (fewer
    # than SPLIT_KEYS cached), several at position 64
    splits = [eng._rt(samp, pos, 16, 0)["splits"] for pos in (0, 16, 64)]
    assert splits[:2] == [1, 1] and splits[2] >= 2, splits
    ops = [d.label for d in eng.graph.prefill.program(eng._rt(samp, 64, 16, 0)).ops
           if hasattr(d, "label")]
    got = eng.logits(ids, mode="prefill")
    assert _rel_err(got, base) < 1e-5
    assert _rel_err(got, Reference.load(models["f32"]).logits(ids)) < 1e-3
    layers = CFG["num_hidden_layers"]
    slugs = [s for s in ops if "attention_prefill" in s]
    assert sum("split1" in s for s in slugs) == layers and \
        sum("combine" in s for s in slugs) == layers, slugs
    first = [d.label for d in eng.graph.prefill.program(eng._rt(samp, 0, 16, 0)).ops
             if hasattr(d, "label")]
    assert not any("split1" in s or "combine" in s for s in first)


@pytest.mark.parametrize("limit,split,unfused", [(8, ["q", "kv"], 1), (6, ["q", "k", "v"], 1)])
def test_storage_buffer_limit_splits_qkv_same_results(q4_engine, backend, monkeypatch, limit,
                                                      split, unfused):
    """A device allowing only ``limit`` storage buffers per stage (WebGPU's default is 8, the
    fused q4_0 qkv_rope_decode binds 11): it runs split, and where a fused RMSNorm does not fit
    (8: the kv kernel; 6: gate_up) the norm is its own dispatch (``unfused`` per layer). The
    ids equal the fused run's and the logits agree to float rounding (the norm's sum of squares
    is reduced in another order)."""
    from dataclasses import replace
    monkeypatch.setattr(backend, "caps", replace(backend.caps, max_storage_buffers=limit))
    low = load(q4_engine.source.folder, backend=backend, max_context=96, kv="f16", chunk=16)
    assert low.graph.qkv_heads("q4_0") == split and q4_engine.graph.qkv_heads("q4_0") == ["qkv"]
    g = low.graph
    used = [st.kernel for r in (g.prefill, g.decode, g.head) for st in r.steps]
    assert max(k.storage_buffers for k in used) <= limit, [k.slug for k in used]
    layers = CFG["num_hidden_layers"]
    assert low.dispatches_per_token == q4_engine.dispatches_per_token + \
        (len(split) - 1 + unfused) * layers
    ids = _ids(40, 1)
    assert np.array_equal(low.logits(ids, mode="prefill"), q4_engine.logits(ids, mode="prefill"))
    a, b = low.logits(ids, mode="decode"), q4_engine.logits(ids, mode="decode")
    # fused: dot(W, x*w) * rinv, x*w quantized to int8 per chunk; unfused: dot(W, x*rinv*w):
    # the same sums up to f32 rounding and the int8 rounding of differently scaled inputs
    # (measured 4e-5 of max |logit| on lavapipe)
    assert np.abs(a - b).max() <= 2e-4 * np.abs(b).max()
    prompt = _ids(17, 3)
    assert list(low.generate(prompt, 16, stop_ids=())) == \
        list(q4_engine.generate(prompt, 16, stop_ids=()))


def test_storage_buffer_limit_too_low_is_refused(q4_engine, backend, monkeypatch):
    from dataclasses import replace
    monkeypatch.setattr(backend, "caps", replace(backend.caps, max_storage_buffers=4))
    with pytest.raises(ModelError, match="storage buffers"):
        load(q4_engine.source.folder, backend=backend, max_context=96, kv="f16", chunk=16)


def test_bad_model_dirs(tmp_path, backend):
    with pytest.raises(ModelError, match="not found"):
        load(tmp_path / "nope", backend=backend)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelError, match="format"):
        load(tmp_path / "bad", backend=backend)


def test_cli_bad_input_one_line_exit_2(tmp_path):
    for args in (["generate", str(tmp_path / "missing"), "--prompt", "x"],
                 ["generate", str(tmp_path), "--prompt", "x", "--top-p", "2"]):
        p = subprocess.run([sys.executable, "-m", "driver", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_bench_quick_output_parses(models):
    p = subprocess.run([sys.executable, "-m", "driver", "bench", str(models["q4_0"]), "--quick",
                        "--json", "--profile"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["dispatches_per_token"] == 23 + 13   # test_decode_dispatch_count's (quant_x: 13)
    # --profile: every dispatch of each program is attributed to exactly one op
    for name, program in (("profile_prefill", "prefill"), ("profile_decode", "decode")):
        (tag, n_all, ms_all), *ops = res[name]
        assert tag == "all" and n_all == sum(n for _, n, _ in ops) and ms_all > 0
    assert {op for op, _, _ in res["profile_decode"][1:]} >= {"qkv_rope_decode", "gate_up",
                                                               "attention_decode", "matvec"}
    assert "rope_append" in {op for op, _, _ in res["profile_prefill"][1:]}
    for k in ("decode", "prefill_tok_s", "copy_gb_s", "weight_gb_s"):
        assert k in res
    assert all(v["tok_s"] > 0 for v in res["decode"])


def test_engine_profile_by_shape_then_generation_unchanged(q4_engine):
    """driver.profile.engine_profile (the page's bench &profile=1, and natively the device script's
    PROFILE=1): rows per op and weight shape that account for every dispatch; it overwrites the KV
    cache, so the engine forgets its cached ids and the next generation equals the one before;
    a prompt past the chunk is one plain BadOption."""
    from driver.engine import BadOption
    from driver.profile import engine_profile
    prompt = _ids(13, 5)
    want = list(q4_engine.generate(prompt, 6, stop_ids=()))
    rep = q4_engine._run(engine_profile(q4_engine, 9, 12, reps_prefill=1, reps_decode=2))
    assert (rep["prompt"], rep["ctx"], rep["by"]) == (9, 12, "shape")
    for name in ("prefill", "decode"):
        (tag, n_all, ms_all), *rows = rep[name]
        assert tag == "all" and n_all == sum(n for _, n, _ in rows) and ms_all > 0
        assert all(n >= 1 and ms > 0 for _, n, ms in rows)
    cfg = q4_engine.cfg
    names = {r[0] for r in rep["prefill"]}
    assert f"matmul {cfg.hidden_size}x{cfg.hidden_size}" in names, names   # wq / wo
    assert q4_engine.kv_ids == []
    assert list(q4_engine.generate(prompt, 6, stop_ids=(), reuse=True)) == want
    with pytest.raises(BadOption, match="prompt must be in"):
        q4_engine._run(engine_profile(q4_engine, q4_engine.graph.chunk + 1, 12))


def test_sweep_measures_candidates_on_one_model(models, tmp_path):
    """``python -m driver sweep``: the chosen candidates measured in one process, dispatch counts
    per context as recorded (the one-pass attention while ctx <= short_ctx), JSON written;
    ``--count-only`` gives the same counts without GPU work; a bad candidate name is one line,
    exit 2."""
    out = tmp_path / "sweep.json"
    nat, page = "native default", "page default"
    base = [sys.executable, "-m", "driver", "sweep", str(models["q4_0"]), "--quick", "--ctx",
            "8,40"]
    p = subprocess.run(base + ["--only", nat, "--only", page, "--only", "depth 4",
                               "--tokens", "3", "--rounds", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "copy roofline" in p.stdout and nat in p.stdout
    (res,) = json.loads(out.read_text())
    rows = {r["name"]: r for r in res["rows"]}
    assert list(rows) == [nat, page, "depth 4"] and res["copy_gb_s"] > 0
    xq = 4 * 3 + 1   # quant_x dispatches natively (test_decode_dispatch_count); none in the
    # page's program on this tiny model (below DecodeOptions.xq_min_weights)
    assert rows[page]["dispatches"] == rows["depth 4"]["dispatches"] == {"8": 19, "40": 19}
    assert rows[nat]["dispatches"] == {"8": 23 + xq, "40": 23 + xq}
    for r in rows.values():
        for b in r["best"].values():
            assert b["tok_s"] > 0 and b["gpu_ms"] > 0 and b["weight_share_of_copy"] > 0
    p = subprocess.run(base + ["--count-only", "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    counts = {r["name"]: r["dispatches"] for r in res["rows"]}
    assert counts[page] == {"1": 19, "8": 19, "40": 19}
    assert counts["page, quant_x for every input"]["8"] == 19 + xq
    assert counts[nat]["40"] == 23 + xq and counts["native, x quantized per kernel"]["40"] == 23
    assert counts["short off"]["8"] == 22 and counts["head norm separate"]["8"] == 20
    p = subprocess.run(base + ["--only", "nope"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "unknown candidate" in p.stderr


def test_sweep_reports_a_candidate_the_device_cannot_build(models, backend):
    """A candidate whose kernels do not exist on the device is a row saying why; the others
    are measured."""
    import io
    from driver.graph import DecodeOptions
    from driver.native.sweep import format_table, sweep_model
    bad = DecodeOptions(short_ctx=4, knobs=DecodeOptions.knobs_of({"attention_decode": {"wg": 3}}))
    res = sweep_model(models["q4_0"], [("default", DecodeOptions(), 3), ("bad", bad, 3)], [8],
                      2, 1, True, log=io.StringIO().write, backend=backend)
    ok, no = res["rows"]
    assert ok["best"]["8"]["tok_s"] > 0 and "error" not in ok
    assert "power of two" in no["error"] and no["best"] == {}
    assert "not run: " in format_table(res)


# ---- HF transformers goldens (tests/golden/README.md) ----
from goldens import golden_names, load_golden, load_smollm2_chat, make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("goldens")


def _golden_model(golden_dir: Path, name: str, quant: str) -> Path:
    from weights_tool.pack import pack
    out = golden_dir / f"{name}-{quant}"
    if not out.exists():
        hf = golden_dir / name
        if not hf.exists():
            make_checkpoint(name, golden_dir)
        pack(hf, out, quant=quant, progress=False)
    return out


@pytest.mark.parametrize("name", golden_names())
def test_golden_f32_logits_and_greedy(name, golden_dir, backend):
    gold = load_golden(name)
    eng = load(_golden_model(golden_dir, name, "f32"), backend=backend, max_context=64,
                      kv="f32", chunk=32)
    ids = gold["input_ids"].tolist()
    got = eng.logits(ids)
    want = gold["logits"]
    # every position: max |difference| within 1e-3 of that position's max |logit|
    per_pos = np.abs(got - want).max(-1) / np.abs(want).max(-1)
    assert per_pos.max() < 1e-3, (per_pos.argmax(), per_pos.max())
    greedy = list(eng.generate(ids[:8], 32, stop_ids=()))
    assert greedy == gold["greedy_ids"].tolist()


@pytest.fixture(scope="module")
def smollm2_native(smollm2_gguf, golden_dir):
    """SmolLM2 packed losslessly (``keep_native``: the GGUF's Q8_0 embedding stays Q8_0;
    requantizing it to q4_1 changes the first reply token)."""
    from weights_tool.pack import pack
    model = golden_dir / "smollm2-native"
    pack(smollm2_gguf, model, quant="q4_1", keep_native=True, progress=False)
    return model


def test_smollm2_chat_greedy_matches_transformers(smollm2_native, backend):
    """Three chat prompts: 48 greedy tokens (no eos stop) identical to transformers' on the
    dequantized GGUF. f32 math and an f32 KV cache: the references are fp32 on the CPU."""
    gold = load_smollm2_chat()
    eng = load(smollm2_native, backend=backend, max_context=256, kv="f32",
                      f16_math=False)
    for case in gold["cases"]:
        got = list(eng.generate(case["prompt_ids"], gold["max_new_tokens"], stop_ids=()))
        assert got == case["greedy_ids"], case["messages"]


@pytest.mark.parametrize("name", ["r2_hd32_llama3_tiny_preset", "r3_hd64_plainrope_untied"])
def test_quantized_quality_vs_f32(name, golden_dir, backend):
    """`python -m driver quality` figures for f16 / q8_0 / q4_0 packings of a golden model.

    Levels measured on lavapipe (2026-11-22): f16 KL ~1e-7, top-1 98-100%; q8_0 KL ~1e-5,
    top-1 97-100%; q4_0 KL 1-4e-3, top-1 64-88%. These random models have nearly flat logits
    (transformers' own top-1/top-2 margins go down to 0.002), so argmax flips under weight noise
    are expected and KL is the meaningful figure; limits sit ~10x above the measured KL (a
    wrong dequantization gives KL >> 0.1) and well below the measured agreement."""
    from driver.native.quality import run_quality
    import io
    models = [_golden_model(golden_dir, name, q) for q in ("f32", "f16", "q8_0", "q4_0")]
    rows = run_quality(models, n_tokens=64, out=io.StringIO(), backend=backend,
                       ids=load_golden(name)["input_ids"].tolist())   # no tokenizer: ids
    # greedy prefixes from the golden prompt: f16 and q8_0 keep >= 8 / 4 of 32; the f16 packing
    # runs f16 matmul arithmetic where the GPU has it, so a flip at a 0.002 margin is allowed.
    # q4_0 (0 to 11 of 32 measured, depending on the prompt) is judged by KL / top-1 only: on
    # these flat logits its first greedy token may already flip
    limits = {"f16": (0.9, 1e-5, 8), "q8_0": (0.85, 1e-4, 4), "q4_0": (0.5, 2e-2, 0)}
    for r in rows[1:]:
        top1, kl, greedy = limits[r["quant"]]
        assert r["top1_agreement"] >= top1, r
        assert r["mean_kl"] < kl, r
        assert r["greedy_common_prefix"] >= greedy, r


def test_cli_chat_answers(smollm2_native):
    """The CLI end to end with its defaults (f16 KV cache, f16 math where the GPU has it)."""
    p = subprocess.run([sys.executable, "-m", "driver", "generate", str(smollm2_native), "--chat",
                        "What is the capital of France?", "--max-tokens", "12", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert "Paris" in res["text"], res["text"]
    assert res["prefill_tokens"] == len(res["prompt_ids"]) and res["ids"]
    assert res["dispatches_per_token"] == 1 + 6 * 30 + 1 + 1 + 2   # decode_options.NATIVE
