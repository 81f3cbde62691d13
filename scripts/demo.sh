#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs what it needs, builds `afloc`, renders a
# phantom chest X-ray world (shared/PHANTOM.md), pretrains the `tiny` AFLoc model on its image-report
# pairs only, then measures zero-shot localization of every finding against the hidden masks, next
# to a centre-prior baseline, and on an unseen finding; then localizes prompts on held-out films
# with `afloc localize`. ~13 minutes on 2 cores (--quick: ~4).
#   bash scripts/demo.sh [--quick]       outputs in ./demo (AFLOC_DEMO_OUT to change)
# Re-running continues where it stopped (the world is kept, training resumes from its checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh --target afloc_cli
AFLOC=./build/bin/afloc
OUT=${AFLOC_DEMO_OUT:-demo}
N_TRAIN=6000; N_TEST=400; EPOCHS=4
if [ "${1:-}" = "--quick" ]; then N_TRAIN=1500; N_TEST=150; EPOCHS=2; OUT=${AFLOC_DEMO_OUT:-demo_quick}; fi
mkdir -p "$OUT"

echo "== 1. phantom world: $N_TRAIN pretraining studies, $N_TEST test studies with hidden masks, an unseen finding"
if [ ! -f "$OUT/world/phantom.json" ]; then
  $AFLOC synth --out "$OUT/world" -n "$N_TRAIN" -m "$N_TEST" --unseen --n-unseen 100 --seed 7 \
    --contact-sheet "$OUT/contact_sheet.png"
fi

echo "== 2. pretraining on image-report pairs only (tiny preset; metrics in $OUT/run/metrics.jsonl)"
RESUME=()
if [ -f "$OUT/run/checkpoints/latest.txt" ]; then RESUME=(--resume); fi
$AFLOC train -c configs/phantom_tiny.json -d "$OUT/world/mimic-cxr-jpg" -o "$OUT/run" -e "$EPOCHS" "${RESUME[@]}"

echo "== 3. zero-shot localization: 'Findings suggesting {finding}.' vs the hidden masks"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" -o "$OUT/eval"
echo "== 4. the unseen finding (never named in pretraining reports)"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" --split unseen -o "$OUT/eval_unseen"
echo "== 5. localize any prompt on held-out films (as on your own PNG/JPEG/DICOM files)"
mkdir -p "$OUT/films"
find "$OUT/world/chexlocalize/CheXpert/test" -name '*.jpg' | sort | head -n 6 | while read -r f; do
  cp "$f" "$OUT/films/$(basename "$(dirname "$(dirname "$f")")").jpg"; done
$AFLOC localize -M "$OUT/run" -p "Findings suggesting cardiomegaly." -p "Findings suggesting pleural effusion." \
  -p "Findings suggesting pneumothorax." "$OUT/films" -o "$OUT/localize"
echo "outputs: $OUT/contact_sheet.png, $OUT/eval/table.txt, $OUT/eval/overlays/sheet.png, $OUT/eval/metrics.json,"
echo "         $OUT/localize/<film>/<prompt>_overlay.png and .npy, $OUT/localize/results.jsonl"
