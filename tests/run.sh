#!/usr/bin/env bash
# Builds fusedcnn and runs its tests: `bash tests/run.sh` for the release build, and
# `bash tests/run.sh all` (CI) for release, sanitize (ASan+UBSan), generic and AVX2 builds
# plus an aarch64 compile check of the NEON kernels. Installs missing packages with apt.
set -euo pipefail
cd "$(dirname "$0")/.."
FUSEDCNN_REQUIRED="cmake g++ make catch2 libbenchmark-dev"
FUSEDCNN_OPTIONAL=""
[ "${1:-}" = "all" ] && FUSEDCNN_OPTIONAL="g++-aarch64-linux-gnu"
. .ci/deps.sh
fusedcnn_install_deps

jobs=$(nproc 2>/dev/null || echo 2)
stage() {  # stage <preset>: configure, build and test one preset, timed
  local t0=$SECONDS
  echo "== $1"
  cmake --preset "$1" -DFUSEDCNN_BUILD_TESTS=ON -DFUSEDCNN_BUILD_EXAMPLES=ON >/dev/null
  cmake --build --preset "$1" -j "$jobs"
  ctest --preset "$1" -j "$jobs"
  echo "== $1 passed in $((SECONDS - t0)) s"
}

stage release
if [ "${1:-}" = "all" ]; then
  stage sanitize
  stage generic
  stage avx2
  if command -v aarch64-linux-gnu-g++ >/dev/null; then
    echo "== neon: compiling every header for aarch64"
    aarch64-linux-gnu-g++ -std=c++20 -O2 -Wall -Wextra -Werror -Iinclude -c tests/neon_check.cpp -o /dev/null
    echo "== neon passed"
  else
    echo "== neon: aarch64-linux-gnu-g++ not available; NEON family not compiled"
  fi
fi
