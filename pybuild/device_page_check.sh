#!/usr/bin/env bash
# The kernel check in the page on the lent GPU (docs/WEB.md "Kernel check in the page"): the same check cases and
# tolerances as `python -m shaders check`, run by driver.kernel_check on the page's own device, where kernels that
# only exist in Chromium (chromium-experimental-subgroup-matrix prefill tiles) can be checked. Run on the device
# machine after the same preparation as pybuild/device_page_bench.sh (its header): Chromium bundle in /opt/crx/root,
# the Vulkan loader, wgpu + flask + numpy importable, web/dist and web/vendor carried (python -m pybuild ran here).
# Usage: bash pybuild/device_page_check.sh OUTDIR [OP ...]   (default ops: matmul gate_up)
#   MODE=compat: Dawn's OpenGL ES backend instead of core WebGPU; MATRIX=0: the device opened without the
#   matrix units (the FMA tiles); FULL=1: every case (export-cases --full), not the quick set; NATIVE=1: also
#   `python -m shaders check` natively on the same ops (OUTDIR/native.txt) for a side-by-side;
#   EXTRA_FLAGS: more Chromium switches (shader-f16 on NVIDIA is already asked for below).
# Writes OUTDIR/cases/ (the export), OUTDIR/check.jsonl (the page's POST) and prints one row per kernel variant.
# Chromium flags and waits as device_page_bench.sh: --disable-vulkan-surface (NVIDIA lacks the headless surface
# extension), FONTCONFIG_FILE (the bundle's fonts), --enable-dawn-features=vulkan_enable_f16_on_nvidia (Dawn turns
# shader-f16 off on NVIDIA by default; the matrix units' f16 configs need it).
set -u
out=${1:?OUTDIR}; shift
ops=("$@"); [ ${#ops[@]} -gt 0 ] || ops=(matmul gate_up)
mode=${MODE:-core}
case "$mode" in
  core) adapter=(--disable-vulkan-surface) ;;
  compat) adapter=(--use-webgpu-adapter=opengles) ;;
  *) echo "MODE must be core or compat, got '$mode'" >&2; exit 2 ;;
esac
mkdir -p "$out"
export_args=(); query="check=1"
for o in "${ops[@]}"; do export_args+=(--op "$o"); query="$query&op=$o"; done
[ -n "${FULL:-}" ] && export_args+=(--full)
[ "${MATRIX:-1}" = 0 ] && query="$query&matrix=0"
python3 -m shaders export-cases "$out/cases" "${export_args[@]}" > "$out/export.log" 2>&1 || { tail "$out/export.log"; exit 1; }
tail -n 1 "$out/export.log"
if [ -n "${NATIVE:-}" ]; then
  native_args=(); for o in "${ops[@]}"; do native_args+=(--op "$o"); done
  [ -n "${FULL:-}" ] || native_args+=(--quick)
  python3 -m shaders check "${native_args[@]}" > "$out/native.txt" 2>&1
  echo "native: $(tail -n 1 "$out/native.txt")"
fi
python3 server.py --port 8124 --check-cases "$out/cases" --check-out "$out/check.jsonl" > "$out/server.log" 2>&1 &
srv=$!
sleep 3
n0=$(cat "$out/check.jsonl" 2>/dev/null | wc -l)
LD_LIBRARY_PATH=/opt/crx/root/lib:/opt/crx/root/chromium \
FONTCONFIG_FILE=/opt/crx/root/fonts/fonts.conf \
VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
timeout 540 /opt/crx/root/chromium/chromium --headless=new --no-sandbox --disable-gpu-sandbox \
  --enable-unsafe-webgpu --ignore-gpu-blocklist --use-angle=vulkan --enable-features=Vulkan \
  --enable-dawn-features=vulkan_enable_f16_on_nvidia \
  "${adapter[@]}" ${EXTRA_FLAGS:-} --no-first-run --disable-background-networking --disable-component-update \
  --disable-sync --disable-quic --user-data-dir="/tmp/pc-crud-$mode" \
  "http://127.0.0.1:8124/?$query" > "$out/chromium.log" 2>&1 &
cr=$!
# until the page reports, or Chromium exits (a crash must not cost the whole timeout)
for _ in $(seq 540); do
  { [ "$(cat "$out/check.jsonl" 2>/dev/null | wc -l)" -gt "$n0" ] || ! kill -0 "$cr" 2>/dev/null; } && break
  sleep 1
done
kill "$cr" 2>/dev/null; wait "$cr" 2>/dev/null
kill "$srv" 2>/dev/null
if [ "$(cat "$out/check.jsonl" 2>/dev/null | wc -l)" -le "$n0" ]; then
  echo "page: no report (see $out/chromium.log and $out/server.log)"; exit 1
fi
# the rows, formatted as `python -m shaders check` prints them
python3 - "$out/check.jsonl" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
if r.get("error"):
    print("page error:", r["error"])
    sys.exit(1)
a, c = r["adapter"], r["caps"]
print(f"adapter: {a.get('vendor')} {a.get('name')} {a.get('description')} ({a.get('backend')})  caps: "
      f"f16={c['shader_f16']} subgroups={c['subgroups']} subgroup_matrix={c['subgroup_matrix']} "
      f"subgroup_sizes={c['subgroup_sizes']}")
num = lambda v: float("inf") if v is None else v   # JSON has no inf: the page sends null
for x in r["rows"]:
    print(f"{x['slug'][:58]:58s} {x['variant']:15s} {x['shape'][:34]:34s} {num(x['err']):11.3e} "
          f"{num(x['nmse']):9.2e} {'ok' if x['ok'] else 'FAIL'}" + (f"\n    {x['msg']}" if x["msg"] else ""))
for s in r.get("skipped", []):
    print(f"not run in the page (several dispatches): {s}")
print(f"{r['passed']}/{r['total']} passed")
sys.exit(0 if r["total"] and r["passed"] == r["total"] else 1)
PY
