#!/usr/bin/env bash
# Builds (in build/bench) and runs the fused-vs-unfused bench; arguments go to `bench`
# (try --help). Installs missing packages with apt; oneDNN is optional (bench_onednn).
set -euo pipefail
cd "$(dirname "$0")/.."
FUSEDCNN_REQUIRED="cmake g++ make libbenchmark-dev"
FUSEDCNN_OPTIONAL="libdnnl-dev ocl-icd-opencl-dev"
. .ci/deps.sh
fusedcnn_install_deps
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DFUSEDCNN_BUILD_TESTS=OFF \
  -DFUSEDCNN_BUILD_EXAMPLES=OFF -DFUSEDCNN_INSTALL=OFF >/dev/null
cmake --build build/bench -j "$(nproc 2>/dev/null || echo 2)"
exec build/bench/bench/bench "$@"
