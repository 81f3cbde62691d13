#!/usr/bin/env bash
# The installed tree works on its own: `cmake --install` puts afloc and its DICOM helper side by side
# (afloc finds afloc-dicom beside its own executable) with the run configurations, and nothing else.
# Usage: install_tree.sh BUILD_DIR WORK_DIR DICOM_FILE
set -euo pipefail
build=$1 work=$2 dicom=$3
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log"

fail() { echo "install_tree: $*" >&2; exit 1; }
[ -x "$prefix/bin/afloc" ] || fail "no $prefix/bin/afloc"
[ -x "$prefix/bin/afloc-dicom" ] || fail "no $prefix/bin/afloc-dicom beside afloc"
[ -f "$prefix/share/afloc/configs/phantom_tiny.json" ] || fail "no share/afloc/configs/phantom_tiny.json"
extra=$(cd "$prefix" && find . -type f | grep -v -e '^./bin/afloc$' -e '^./bin/afloc-dicom$' -e '^./share/afloc/configs/.*\.json$' || true)
[ -z "$extra" ] || fail "unexpected installed files: $extra"

# Run from elsewhere, with the build tree out of reach: a one-step model, then a DICOM localized.
afloc=$prefix/bin/afloc
cd "$work"
unset AFLOC_DICOM_HELPER
"$afloc" --version
"$afloc" --log-level warn synth --out world -n 16 -m 2 --size 64 >synth.log 2>&1 || { cat synth.log; fail "synth failed"; }
"$afloc" --log-level warn train -c "$prefix/share/afloc/configs/phantom_tiny.json" -d world/mimic-cxr-jpg -o run \
  -b 8 --max-steps 1 --no-validate >train.log 2>&1 || { cat train.log; fail "train with the installed config failed"; }
"$afloc" --log-level info localize -M run -f Cardiomegaly "$dicom" -o loc >localize.log 2>&1 || { cat localize.log; fail "localize failed"; }
cat localize.log
if grep -q "no DICOM helper program" localize.log; then fail "the installed afloc did not find afloc-dicom"; fi
grep -q '"heatmap_npy"' loc/results.jsonl || fail "no heatmap in loc/results.jsonl"
echo "install_tree: ok"
