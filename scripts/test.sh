#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs, builds, runs every
# CTest test (unit, golden, reference). Golden cases are required: a missing ../shared/golden fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export AFLOC_REQUIRE_GOLDEN=${AFLOC_REQUIRE_GOLDEN:-1}
# OpenBLAS's idle worker sleeps at once instead of spinning: ~10% faster training on few cores, the
# same results (docs/training.md, Performance). It is read when the library loads, hence here.
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
