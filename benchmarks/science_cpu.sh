#!/bin/bash
# The CPU rerun of issue 15 (docs/results.md, "three pretraining seeds"): label efficiency with several
# pretraining seeds at fixed steps, in-domain and with one held-out site. Resumable: rerun the same command.
#
#   bash benchmarks/science_cpu.sh DEMO_DIR OUT [HOLDOUT_SITE]
#
# DEMO_DIR is a finished `petctfm demo --out DEMO_DIR` (cpu preset): its dataset/ and synth/ are reused, and its
# finetune/ scratch runs (same data, steps and overrides) serve as the scratch arms of the in-domain table.
# Every pretraining run: early-fusion MAE, tiny preset, 48^3 patches, --max-steps 400 (no time cap); every
# fine-tuning run: --max-steps 500 (no time cap). Then:
#   python benchmarks/pretrain_seeds.py --exp OUT/ft_p0 --exp OUT/ft_p1 --exp OUT/ft_p2 --out OUT/table
#   python benchmarks/pretrain_seeds.py --exp OUT/hft_p0 --exp OUT/hft_p1 --exp OUT/hft_p2 --out OUT/htable
set -u
DEMO=${1:?demo folder}; OUT=${2:?output folder}; SITE=${3:-lakeside_clinic}
PETCTFM=${PETCTFM:-petctfm}
PRE_STEPS=${PRE_STEPS:-400}; FT_STEPS=${FT_STEPS:-500}; SEEDS=${SEEDS:-0 1 2}
FT_SET=(--set 'data.patch_size=[32,32,32]' --set data.fg_prob=0.67 --set val.overlap=0.25 --set train.figure_every=250
        --set train.checkpoint_every=250 --set train.warmup_steps=20)
mkdir -p "$OUT"

pretrain() {  # DATA RUN SEED
    [ -f "$2/DONE" ] && return 0
    $PETCTFM pretrain --data "$1" --out "$2" --preset tiny --max-steps "$PRE_STEPS" --seed "$3" \
        --set 'data.patch_size=[48,48,48]' $( [ -d "$2/checkpoints" ] && echo --resume ) > "$2.log" 2>&1 && touch "$2/DONE"
}

finetune() {  # DATA PRETRAINED EXP [extra args]
    local data=$1 pre=$2 exp=$3; shift 3
    $PETCTFM experiment label-efficiency --data "$data" --pretrained "$pre" --out "$exp" --preset tiny --seeds 0,1,2 \
        --runs pretrained:10,scratch:10,scratch:100 --probe-kshot 0 --max-steps "$FT_STEPS" --max-time 100000 \
        "${FT_SET[@]}" --no-progress "$@" > "$exp.log" 2>&1
}

copy_scratch() {  # FROM TO: the scratch arms do not depend on the pretraining run: one copy serves every folder
    mkdir -p "$2"
    for r in "$1"/finetune_scratch_*; do [ -d "$r" ] && [ ! -d "$2/$(basename "$r")" ] && cp -r "$r" "$2/"; done
}

# in-domain: the demo's dataset
for p in $SEEDS; do pretrain "$DEMO/dataset" "$OUT/pre_s$p" "$p"; done
for p in $SEEDS; do copy_scratch "$DEMO/finetune" "$OUT/ft_p$p"; finetune "$DEMO/dataset" "$OUT/pre_s$p" "$OUT/ft_p$p"; done

# held-out site: the same phantoms harmonized with one site kept out of training, pretraining and normalization
[ -f "$OUT/ds_holdout/dataset.json" ] || $PETCTFM harmonize --in "$DEMO/synth/dicom" --out "$OUT/ds_holdout" \
    --spacing 4 4 4 --workers 1 --holdout-site "$SITE" --no-thumbnails > "$OUT/harm_holdout.log" 2>&1
for p in $SEEDS; do
    pretrain "$OUT/ds_holdout" "$OUT/hpre_s$p" "$p"
    [ "$p" = "${SEEDS%% *}" ] || copy_scratch "$OUT/hft_p${SEEDS%% *}" "$OUT/hft_p$p"
    finetune "$OUT/ds_holdout" "$OUT/hpre_s$p" "$OUT/hft_p$p" --holdout-site "$SITE"
done
