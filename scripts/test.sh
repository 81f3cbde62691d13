#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs, builds, runs every
# CTest test (unit, golden, reference). Golden cases are required: a missing ../shared/golden fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export AFLOC_REQUIRE_GOLDEN=${AFLOC_REQUIRE_GOLDEN:-1}
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
