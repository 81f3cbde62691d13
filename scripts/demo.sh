#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs what it needs, builds the `afloc` program and
# runs the end-to-end demo. Today the demo encodes images and reports with a small random AFLoc
# model, prints the embeddings' shapes and the alignment loss, and takes a few optimizer steps;
# pretraining on the phantom world and localization join it as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh --target afloc_cli
./build/bin/afloc demo "$@"
