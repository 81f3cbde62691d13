#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs what it needs, builds `afloc`, renders a
# phantom chest X-ray world (shared/PHANTOM.md), pretrains the `tiny` AFLoc model on its image-report
# pairs only, then measures zero-shot localization of every finding against the hidden masks (and,
# as MS-CXR is scored, their boxes), next to a centre-prior baseline, and zero-shot diagnosis (AUROC) of every finding; then localizes and
# classifies held-out films with `afloc localize` / `afloc classify`. ~15-25 minutes on 2 cores once
# built, depending on the CPU (--quick: ~4).
#   bash scripts/demo.sh [--quick]       outputs in ./demo (AFLOC_DEMO_OUT to change)
# Re-running continues where it stopped (the world is kept, training resumes from its checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh --target afloc_cli
AFLOC=./build/bin/afloc
# OpenBLAS's idle worker otherwise spins in sched_yield after every gemm, taking a core from
# LibTorch's own threads on a small machine; OpenBLAS reads this when it loads, so it is set here
# (the demo's training: 823 s with it, 915 s without, same results; docs/training.md, Performance).
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
OUT=${AFLOC_DEMO_OUT:-demo}
N_TRAIN=6000; N_TEST=400; EPOCHS=10
if [ "${1:-}" = "--quick" ]; then N_TRAIN=1500; N_TEST=150; EPOCHS=4; OUT=${AFLOC_DEMO_OUT:-demo_quick}; fi
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

echo "== 3. zero-shot localization ('Findings suggesting {finding}.' vs the hidden masks) and diagnosis (AUROC)"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" -o "$OUT/eval"
echo "== 3b. the same model's deep map alone (--levels deep: the authors' reading; the recipe averages it with the shallow map)"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" -o "$OUT/eval_deep" --levels deep --no-classify
echo "== 3c. the contrast reading (--contrast 0.5: each finding's map minus half the mean map of the findings' prompts)"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" -o "$OUT/eval_contrast" --contrast 0.5 --no-classify
echo "== 3d. with the centred reading too (--centre 0.5: each map minus half its mean over 500 training films)"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" -o "$OUT/eval_centre" --contrast 0.5 --centre 0.5 --no-classify
echo "== 3e. the same heatmaps scored against the findings' boxes (--truth boxes), as MS-CXR and RSNA are scored"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" -o "$OUT/eval_boxes" --truth boxes --no-classify
echo "== 4. the unseen finding (never named in pretraining reports)"
$AFLOC eval-phantom -r "$OUT/run" -w "$OUT/world" --split unseen -o "$OUT/eval_unseen" --no-classify
echo "== 5. localize findings on held-out films (as on your own PNG/JPEG/DICOM files): masks only where"
echo "      the finding is classified present, ground-truth boxes drawn in green"
MSCXR="$OUT/world/ms_cxr/MS_CXR_Local_Alignment_v1.0.0.csv"
# six films of the MS-CXR-style test list (paths in a .txt list are relative to the list's folder)
# (sed rather than head: under pipefail, head's early exit can fail the pipeline with SIGPIPE)
grep -o 'files/p[0-9]*/p[0-9]*/s[0-9]*/[^,"]*\.jpg' "$MSCXR" | sort -u | sed -n '1,6s|^|world/mimic-cxr-jpg/|p' > "$OUT/films.txt"
$AFLOC localize -M "$OUT/run" -f Cardiomegaly -f "Pleural Effusion" -f Pneumothorax --boxes "$MSCXR" "$OUT/films.txt" \
  -o "$OUT/localize"
echo "== 6. classify the held-out films with the phantom prompt bank (the authors' chest X-ray prompt sets)"
$AFLOC classify -M "$OUT/run" --bank phantom "$OUT/films.txt" -o "$OUT/classify"
echo
echo "== results (model vs centre prior; AUROC vs chance 0.5): $OUT/eval/table.txt"
cat "$OUT/eval/table.txt"
echo "== the deep map alone (--levels deep): $OUT/eval_deep/table.txt"
sed -n '1p;/macro mean/p' "$OUT/eval_deep/table.txt"
echo "== with --contrast 0.5: $OUT/eval_contrast/table.txt"
sed -n '1p;/macro mean/p' "$OUT/eval_contrast/table.txt"
echo "== with --contrast 0.5 --centre 0.5: $OUT/eval_centre/table.txt"
sed -n '1p;/macro mean/p' "$OUT/eval_centre/table.txt"
echo "== against the findings' boxes instead of their masks (--truth boxes): $OUT/eval_boxes/table.txt"
sed -n '1p;/macro mean/p' "$OUT/eval_boxes/table.txt"
echo "outputs: $OUT/contact_sheet.png, $OUT/run/curves.png, $OUT/eval/table.txt, $OUT/eval/overlays/sheet.png, $OUT/eval/metrics.json,"
echo "         $OUT/localize/<film>/<prompt>_overlay.png and .npy, $OUT/localize/results.jsonl, $OUT/classify/scores.csv"
