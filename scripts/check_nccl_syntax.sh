#!/usr/bin/env bash
# Compiles (syntax and types only, no object, no link) the NCCL path of src/afloc/train/distributed.cpp
# against the installed LibTorch headers and a CUDA toolkit's headers (nccl.h, cuda_runtime.h). A
# CPU-only LibTorch (Debian's) ships ProcessGroupNCCL.hpp but not the generated
# c10/cuda/impl/cuda_cmake_macros.h, which a stand-in supplies here. This checks that the NCCL
# code is written against the real API; it does not run it (that needs a GPU and a CUDA LibTorch).
#   bash scripts/check_nccl_syntax.sh [CUDA_HOME]   (default /usr/local/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${1:-${CUDA_HOME:-/usr/local/cuda}}
[ -f "$cuda/include/nccl.h" ] || { echo "no nccl.h under $cuda/include: give a CUDA toolkit with NCCL" >&2; exit 2; }
[ -f /usr/include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp ] || { echo "no LibTorch c10d headers in /usr/include" >&2; exit 2; }
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
if [ ! -f /usr/include/c10/cuda/impl/cuda_cmake_macros.h ]; then
  mkdir -p "$stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
fi
c++ -std=c++17 -fsyntax-only -Wall -Wextra -D_GLIBCXX_USE_CXX11_ABI=1 \
  -DUSE_C10D_NCCL -DUSE_C10D_GLOO -DUSE_DISTRIBUTED -DUSE_RPC -DUSE_TENSORPIPE \
  -Isrc -isystem "$stub" -isystem /usr/include/opencv4 -isystem /usr/include/torch/csrc/api/include -isystem "$cuda/include" \
  src/afloc/train/distributed.cpp
echo "distributed.cpp with USE_C10D_NCCL: compiles against $(ls -d /usr/include/torch) and $cuda/include"
