#!/usr/bin/env bash
# The page against the native driver on the lent GPU, same packed model, same machine, same run
# (docs/WEB.md "Speed on a real GPU"). Run on the device machine after:
#   - Debian's Chromium with its libraries and fonts (two DejaVu fonts + a fonts.conf) unpacked into
#     /opt/crx/root (chromium/, lib/, fonts/), the Vulkan loader (libvulkan1) installed;
#   - wgpu, flask and their pure-Python wheels on PYTHONPATH (flask werkzeug jinja2 markupsafe
#     itsdangerous click blinker gguf pyyaml tqdm);
#   - web/dist and web/vendor carried (python -m pybuild ran here).
# Usage: bash pybuild/device_page_bench.sh OUTDIR [PRESET] [QUANT]   (MODE=compat for compatibility mode;
# TTFT=10: instead, time to first token per turn of a 10-turn id-level chat (KV cache reused), natively
# (python -m driver bench --ttft's run_ttft_bench) and in the page (/?bench=bench&ttft=10);
# EXTRA_FLAGS: more Chromium switches, e.g. --enable-dawn-features=vulkan_enable_f16_on_nvidia (shader-f16);
# PROGRAMS="default split deep": the decode programs measured, natively and in the page, web/app.js DECODE_PROGRAMS;
# PROMPT=512: the prompt length of both sides (default 128); MATRIX=0: the page's device opened without
# chromium-experimental-subgroup-matrix (prefill on the FMA tiles; the feature needs EXTRA_FLAGS' f16 switch))
# PROFILE=1: also the GPU time by op and weight shape (driver/profile.py) of a prompt-length prefill chunk and a decode
# step at that context, natively (native.json "profile") and in the page (page.jsonl "profile");
# PACK=1: the model through weights_tool synth + pack --uniform --method rtn (minutes for an 8B shape) instead of
# driver.native.synthetic's random packed folder (the same tensor table and formats, seconds).
# Writes OUTDIR/native.json (Engine.generate, best of 5 after a warm-up, per program) and OUTDIR/page.jsonl (the page's POSTs,
# one line per program).
# Chromium needs the fonts the bundle packs (FONTCONFIG_FILE below; without them it aborts with
# "SkFontMgr_FontConfigInterface.cpp: Not implemented"). Core WebGPU on NVIDIA needs
# --disable-vulkan-surface: headless Chromium otherwise asks Vulkan for VK_EXT_headless_surface,
# which NVIDIA's driver lacks, and WebGPU falls back to SwiftShader. MODE=compat runs Dawn's OpenGL ES
# backend instead (the fallback for GPUs without core WebGPU).
set -u
out=${1:?OUTDIR}; preset=${2:-smollm-shape}; quant=${3:-q4_0}; mode=${MODE:-core}
programs=${PROGRAMS:-default split}; prompt_len=${PROMPT:-128}
matrix_q=""; [ "${MATRIX:-1}" = 0 ] && matrix_q="&matrix=0"
case "$mode" in
  core) adapter=(--disable-vulkan-surface) ;;
  compat) adapter=(--use-webgpu-adapter=opengles) ;;
  *) echo "MODE must be core or compat, got '$mode'" >&2; exit 2 ;;
esac
mkdir -p "$out"
# one packed model per preset and quant, kept between calls while the machine is warm
m=/tmp/pb-models-$preset-$quant
if [ ! -s "$m/bench/manifest.json" ]; then
  rm -rf "$m" /tmp/pb-hf && mkdir -p "$m"
  if [ "${PACK:-0}" = 1 ]; then
    python3 -m weights_tool synth /tmp/pb-hf --preset "$preset" > "$out/synth.log" 2>&1 || { tail "$out/synth.log"; exit 1; }
    python3 -m weights_tool pack /tmp/pb-hf "$m/bench" --quant "$quant" --uniform --method rtn > "$out/pack.log" 2>&1 || { tail "$out/pack.log"; exit 1; }
    rm -rf /tmp/pb-hf
  else   # the same tensor table written straight from random patterns: seconds for an 8B shape
    python3 -m driver.native.synthetic "$m/bench" "$preset" "$quant" > "$out/synth.log" 2>&1 || { tail "$out/synth.log"; exit 1; }
  fi
fi
# native: the page's prompt ids (web/app.js runBench), the same definitions of the two speeds
if [ -n "${TTFT:-}" ]; then
  programs=default
  MODEL="$m/bench" python3 -c 'import json, os
from driver.native import load
from driver.native.bench_session import run_ttft_bench
print(json.dumps(run_ttft_bench(load(os.environ["MODEL"]))))' > "$out/native.json"
  query="ttft=$TTFT"
else
  query="prompt=$prompt_len&tokens=128$matrix_q"
  [ "${PROFILE:-0}" = 1 ] && query="$query&profile=1"
PROFILE="${PROFILE:-0}" PROMPT="$prompt_len" PROGRAMS="$programs" MODEL="$m/bench" python3 - > "$out/native.json" <<'PY'
import json, os
from driver.decode_options import DecodeOptions
from driver.native import load
PROGRAMS = {"default": DecodeOptions(), "split": DecodeOptions(short_ctx=0, head_norm=False),
            "deep": DecodeOptions(depth=6), "noxq": DecodeOptions(xq=False),
            "allxq": DecodeOptions(xq_min_weights=0)}
e = load(os.environ["MODEL"])
n_prompt = int(os.environ["PROMPT"])
prompt = lambda r: [1 + (i * 7919 + r * 104729) % 1000 for i in range(n_prompt)]   # web/app.js runBench
out = {}
for name in os.environ["PROGRAMS"].split():
    e.set_decode(PROGRAMS[name])
    list(e.generate(prompt(5), 128, stop_ids=()))          # warm-up, as the page's
    runs = []
    for r in range(5):
        ids = list(e.generate(prompt(r), 128, stop_ids=()))
        s = e.last_stats
        steps = s["generated"] - 1
        split = {k: 1e3 * s.get(f"decode_{k}_s", 0.0) / steps for k in ("submit", "wait")}
        split["rest"] = 1e3 * s["decode_s"] / steps - sum(split.values())
        runs.append({"n": len(ids), "decode_tokens_per_s": (s["generated"] - 1) / s["decode_s"],
                     "decode_ms_per_step": split,
                     "prefill_tokens_per_s": s["prompt_tokens"] / s["prefill_s"]})
    out[name] = {"dispatches_per_token": e.dispatches_per_token, "runs": runs,
                 "decode_tokens_per_s": max(r["decode_tokens_per_s"] for r in runs),
                 "prefill_tokens_per_s": max(r["prefill_tokens_per_s"] for r in runs),
                 "ids": ids[:16]}
if os.environ.get("PROFILE") == "1":   # the page's &profile=1 rows, natively (driver/profile.py)
    from driver.profile import engine_profile
    out["profile"] = e._run(engine_profile(e, n_prompt, n_prompt))
print(json.dumps(out))
PY
fi
python3 server.py --models "$m" --port 8123 --bench-out "$out/page.jsonl" > "$out/server.log" 2>&1 &
srv=$!
sleep 3
for prog in $programs; do
n0=$(cat "$out/page.jsonl" 2>/dev/null | wc -l)
LD_LIBRARY_PATH=/opt/crx/root/lib:/opt/crx/root/chromium \
FONTCONFIG_FILE=/opt/crx/root/fonts/fonts.conf \
VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
timeout 300 /opt/crx/root/chromium/chromium --headless=new --no-sandbox --disable-gpu-sandbox \
  --enable-unsafe-webgpu --ignore-gpu-blocklist --use-angle=vulkan --enable-features=Vulkan \
  "${adapter[@]}" ${EXTRA_FLAGS:-} --no-first-run --disable-background-networking --disable-component-update \
  --disable-sync --disable-quic --user-data-dir="/tmp/pb-crud-$preset-$quant" \
  "http://127.0.0.1:8123/?bench=bench&$query&decode=$prog" > "$out/chromium-$prog.log" 2>&1 &
cr=$!
# until the page reports, or Chromium exits (a crash must not cost the whole timeout)
for _ in $(seq 300); do
  { [ "$(cat "$out/page.jsonl" 2>/dev/null | wc -l)" -gt "$n0" ] || ! kill -0 "$cr" 2>/dev/null; } && break
  sleep 1
done
kill "$cr" 2>/dev/null; wait "$cr" 2>/dev/null
done
kill "$srv" 2>/dev/null
echo "native: $(cat "$out/native.json")"
echo "page:   $(cat "$out/page.jsonl" 2>/dev/null || echo 'no report (see chromium.log)')"
