#!/usr/bin/env bash
# The whole test suite: set-up (idempotent, seconds when done already), then pytest.
# Usage: bash test.sh [pytest args, e.g. -x -q tests/test_fetch.py, --full for the long sweeps]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

bash run.sh --setup-only

# In CI a missing or different WebGPU adapter must fail the GPU tests instead of skipping them: lavapipe is what
# CI has. Elsewhere the tests use what they find, unless the caller sets WGPU_EXPECT_ADAPTER itself.
if [[ "${CI:-}" == "true" && -z "${WGPU_EXPECT_ADAPTER:-}" ]]; then
  export WGPU_EXPECT_ADAPTER=llvmpipe
fi

printf '\n==> pytest %s\n' "${*:-(all tests)}"
exec .venv/bin/python -m pytest "$@"
