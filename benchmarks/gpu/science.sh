#!/usr/bin/env bash
# benchmarks/gpu/science.sh [--smoke]: the GPU-scale label-efficiency result in one run (<= 9 minutes on one
# H200 with 16 CPU cores): synthesize `small` phantoms (16 workers) -> harmonize at 4 mm -> pretrain the
# early-fusion MAE (residual UNet, 64^3, no labels) -> fine-tune pretrained 10 % / scratch 10 % / scratch
# 100 % with the same --max-steps, 5-shot linear probe of the joint encoder -> evaluate on the test split
# (and on a held-out site when `petctfm experiment label-efficiency` has --holdout-site).
# Writes to $OUT (default out/gpu): science.log, science.md (stages, commands, results), results.md,
# results.csv, label_efficiency.png (the experiment's own files).
# Budget knobs (environment): CASES=200 WORKERS=16 SPACING="4 4 4" PRETRAIN_S=100 FT_STEPS=600 FT_S=70
#   PROBE_STEPS=300 SEEDS=0 WORK=/tmp/petctfm_science. Less time: CASES=120 PRETRAIN_S=60 FT_STEPS=400.
# --smoke: the same commands on 8 `tiny` phantoms at 8 mm with the tiny presets, CPU (CI runs it).
source "$(dirname "$0")/_setup.sh"
exec > >(tee -a "$OUT/science.log") 2>&1

if [ "$SMOKE" = 1 ]; then
    CASES=${CASES:-8} SIZE=tiny WORKERS=${WORKERS:-2} SPACING=${SPACING:-8 8 8}
    PRE=(--preset tiny --max-steps 4 --device cpu)
    FT_PRESET=tiny FT_STEPS=${FT_STEPS:-4} FT_S=${FT_S:-60} PATCH=32 KSHOT=5 PROBE_STEPS=${PROBE_STEPS:-3}
    FT_SET=(--set train.compile=false --set train.num_workers=0)
else
    CASES=${CASES:-200} SIZE=small WORKERS=${WORKERS:-16} SPACING=${SPACING:-4 4 4}
    # residual UNet, 64^3 at 4 mm (26 cm), batch 8, eager: torch.compile's warm-up would eat the budget
    PRE=(--preset gpu --backbone unet-resenc --patch 64 --no-compile --max-steps 100000 --max-time "${PRETRAIN_S:-100}"
         --warmup-steps 50 --log-every 20 --checkpoint-every 100000 --figure-every 100000 --num-workers 12)
    FT_PRESET=gpu FT_STEPS=${FT_STEPS:-600} FT_S=${FT_S:-70} PATCH=64 KSHOT=5 PROBE_STEPS=${PROBE_STEPS:-300}
    FT_SET=(--set train.compile=false --set train.num_workers=8)
fi
WORK=${WORK:-/tmp/petctfm_science$([ "$SMOKE" = 1 ] && echo _smoke)}
rm -rf "$WORK"
mkdir -p "$WORK"
STAGES=$OUT/.stages.tsv
: > "$STAGES"
CLI=($PY -m petctfm.cli.main)

run_stage() {  # run_stage NAME ARGS...: one petctfm command, timed, recorded in the stage table; stops on failure
    local name=$1 t0=$SECONDS
    shift
    stage "$name: petctfm $*"
    "${CLI[@]}" "$@"
    local rc=$?
    printf '%s\t%s\tpetctfm %s\n' "$name" "$((SECONDS - t0))" "$*" >> "$STAGES"
    if [ $rc -ne 0 ]; then
        echo "$name failed (status $rc)"
        $PY benchmarks/gpu/report.py science "$OUT" --seconds $((SECONDS - T_START)) --smoke "$SMOKE" --stages "$STAGES"
        rm -f "$STAGES"
        exit $rc
    fi
}

run_stage synth synth --out "$WORK/synth" --cases "$CASES" --seed 0 --size "$SIZE" --formats autopet \
    --workers "$WORKERS" --no-progress
# The held-out site is left out when the dataset is built (splits, statistics, pretraining never see it).
HOLDOUT=()
if "${CLI[@]}" experiment label-efficiency --help | grep -q -- --holdout-site; then
    SITE=$($PY -c "import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(sorted({x['site'] for x in r})[-1])" \
        "$(find "$WORK/synth" -name metadata.csv | head -n 1)")
    HOLDOUT=(--holdout-site "$SITE")
    echo "held-out site: $SITE"
else
    echo "held-out site: skipped (petctfm experiment label-efficiency has no --holdout-site yet)"
fi
# shellcheck disable=SC2086  # SPACING is three numbers
run_stage harmonize harmonize --in "$WORK/synth/autopet" --out "$WORK/dataset" --spacing $SPACING \
    --workers "$WORKERS" --no-thumbnails "${HOLDOUT[@]}"
run_stage pretrain pretrain --data "$WORK/dataset" --out "$WORK/pretrain" --seed 0 --no-progress "${PRE[@]}"

run_stage label-efficiency experiment label-efficiency --data "$WORK/dataset" --pretrained "$WORK/pretrain" \
    --out "$WORK/exp" --preset "$FT_PRESET" --seeds "${SEEDS:-0}" --runs pretrained:10,scratch:10,scratch:100 \
    --probe-kshot "$KSHOT" --probe-steps "$PROBE_STEPS" --max-steps "$FT_STEPS" --max-time "$FT_S" --no-progress \
    --set "data.patch_size=[$PATCH,$PATCH,$PATCH]" --set data.fg_prob=0.67 --set val.overlap=0.25 \
    --set train.figure_every=100000 --set "train.checkpoint_every=$FT_STEPS" --set train.warmup_steps=20 \
    "${FT_SET[@]}" "${HOLDOUT[@]}"

for f in results.md results.csv label_efficiency.png; do
    cp "$WORK/exp/$f" "$OUT/$f" || echo "missing: $WORK/exp/$f"
done
stage "report"
$PY benchmarks/gpu/report.py science "$OUT" --seconds $((SECONDS - T_START)) --smoke "$SMOKE" --stages "$STAGES" \
    --command "benchmarks/gpu/science.sh$([ "$SMOKE" = 1 ] && echo ' --smoke')"
rm -f "$STAGES"
stage "done"
