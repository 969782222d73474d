#!/usr/bin/env bash
# The page against the native driver on the lent GPU, same packed model, same machine, same run
# (docs/WEB.md "Speed on a real GPU"). Run on the device machine after:
#   - Debian's Chromium with its libraries and fonts (two DejaVu fonts + a fonts.conf) unpacked into
#     /opt/crx/root (chromium/, lib/, fonts/), the Vulkan loader (libvulkan1) installed;
#   - wgpu, flask and their pure-Python wheels on PYTHONPATH (flask werkzeug jinja2 markupsafe
#     itsdangerous click blinker gguf pyyaml tqdm);
#   - web/dist and web/vendor carried (python -m pybuild ran here).
# Usage: bash pybuild/device_page_bench.sh OUTDIR [PRESET] [QUANT]   (MODE=compat for compatibility mode)
# Writes OUTDIR/native.json (Engine.generate, best of 3) and OUTDIR/page.jsonl (the page's POST).
# Chromium needs the fonts the bundle packs (FONTCONFIG_FILE below; without them it aborts with
# "SkFontMgr_FontConfigInterface.cpp: Not implemented"). Core WebGPU on NVIDIA needs
# --disable-vulkan-surface: headless Chromium otherwise asks Vulkan for VK_EXT_headless_surface,
# which NVIDIA's driver lacks, and WebGPU falls back to SwiftShader. MODE=compat runs Dawn's OpenGL ES
# backend instead (the fallback for GPUs without core WebGPU).
set -u
out=${1:?OUTDIR}; preset=${2:-smollm-shape}; quant=${3:-q4_0}; mode=${MODE:-core}
case "$mode" in
  core) adapter=(--disable-vulkan-surface) ;;
  compat) adapter=(--use-webgpu-adapter=opengles) ;;
  *) echo "MODE must be core or compat, got '$mode'" >&2; exit 2 ;;
esac
mkdir -p "$out"
m=/tmp/pb-models
rm -rf "$m" /tmp/pb-hf && mkdir -p "$m"
python3 -m weights_tool synth /tmp/pb-hf --preset "$preset" > "$out/synth.log" 2>&1 || { tail "$out/synth.log"; exit 1; }
python3 -m weights_tool pack /tmp/pb-hf "$m/bench" --quant "$quant" --uniform > "$out/pack.log" 2>&1 || { tail "$out/pack.log"; exit 1; }
# native: the page's prompt ids (web/app.js runBench), the same definitions of the two speeds
python3 - > "$out/native.json" <<'PY'
import json
from driver.native import load
e = load("/tmp/pb-models/bench")
prompt = [1 + (i * 7919) % 1000 for i in range(128)]
list(e.generate(prompt[:8], 8, stop_ids=()))          # warm-up
runs = []
for _ in range(3):
    ids = list(e.generate(prompt, 128, stop_ids=()))
    s = e.last_stats
    runs.append({"n": len(ids), "decode_tokens_per_s": (s["generated"] - 1) / s["decode_s"],
                 "prefill_tokens_per_s": s["prompt_tokens"] / s["prefill_s"]})
print(json.dumps({"dispatches_per_token": e.dispatches_per_token, "runs": runs,
                  "decode_tokens_per_s": max(r["decode_tokens_per_s"] for r in runs),
                  "prefill_tokens_per_s": max(r["prefill_tokens_per_s"] for r in runs),
                  "ids": ids[:16]}))
PY
python3 server.py --models "$m" --port 8123 --bench-out "$out/page.jsonl" > "$out/server.log" 2>&1 &
srv=$!
sleep 3
LD_LIBRARY_PATH=/opt/crx/root/lib:/opt/crx/root/chromium \
FONTCONFIG_FILE=/opt/crx/root/fonts/fonts.conf \
VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
timeout 300 /opt/crx/root/chromium/chromium --headless=new --no-sandbox --disable-gpu-sandbox \
  --enable-unsafe-webgpu --ignore-gpu-blocklist --use-angle=vulkan --enable-features=Vulkan \
  "${adapter[@]}" --no-first-run --disable-background-networking --disable-component-update \
  --disable-sync --disable-quic --user-data-dir=/tmp/pb-crud \
  "http://127.0.0.1:8123/?bench=bench&prompt=128&tokens=128" > "$out/chromium.log" 2>&1 &
cr=$!
# until the page reports, or Chromium exits (a crash must not cost the whole timeout)
for _ in $(seq 300); do { [ -s "$out/page.jsonl" ] || ! kill -0 "$cr" 2>/dev/null; } && break; sleep 1; done
kill "$cr" "$srv" 2>/dev/null
echo "native: $(cat "$out/native.json")"
echo "page:   $(cat "$out/page.jsonl" 2>/dev/null || echo 'no report (see chromium.log)')"
