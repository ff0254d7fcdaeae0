#!/usr/bin/env bash
# benchmarks/gpu/speed.sh [--smoke]: the speed targets in one run (<= 4 minutes on one H200), each against
# its naive reference measured in the same run:
#   1. petctfm predict end to end on a whole-body PET 400x400x300 + CT 512x512x300 pair (SwinUNETR-v2 48,
#      no TTA; stage seconds; target <= 3 s) vs plain MONAI sliding_window_inference;
#   2. the early-fusion MAE pretraining step at 96^3, bf16 (SwinUNETR-v2 feature size 48, then the residual
#      UNet): samples/s, MFU, and for SwinUNETR the loader fed from an on-disk harmonized dataset with GPU
#      utilization (NVML) vs the plain reference step (target >= 3x);
#   3. FratMAE and the promptable model: run when their benchmark scripts exist, else a message.
# Writes to $OUT (default out/gpu): speed.log, speed.md (tables to paste), predict.json, pretrain_swin.json,
# pretrain_unet.json, pretrain_compile.json.
# --smoke: the same code path on the CPU with tiny networks and volumes (CI runs it: tests/benchmarks).
#   torch.compile of the SwinUNETR step comes last, in the time left (COMPILE_S): its warm-up took up to
#   200 s on an H100, so a short budget may end it unmeasured (the log says so).
# Stage budgets (seconds, each a hard timeout): PREDICT_S=80 PRETRAIN_S=60 UNET_S=35 COMPILE_S=40.
source "$(dirname "$0")/_setup.sh"
exec > >(tee -a "$OUT/speed.log") 2>&1

if [ "$SMOKE" = 1 ]; then
    PREDICT_ARGS=(--cpu-smoke --shape 48 48 32 --ct-shape 64 64 32 --repeats 1)
    PRETRAIN_ARGS=(--cpu-smoke --variants 1)
    UNET_ARGS=(--cpu-smoke --unet --no-swin --variants 1 --skip-loader --patch 32)
    COMPILE_ARGS=()
    BUDGET_DEFAULT=900  # CPU under load: the smoke checks the code path, not the clock
else
    PREDICT_ARGS=(--shape 400 400 300 --ct-shape 512 512 300 --repeats 3)
    PRETRAIN_ARGS=(--features 48 --variants 8 16 8:flash --steps 10 --workers 12 --loader-cases 6)
    UNET_ARGS=(--unet --no-swin --variants 8 16 --steps 10 --skip-loader)
    COMPILE_ARGS=(--features 48 --variants 8:compile --steps 10 --skip-loader)
    BUDGET_DEFAULT=
fi

run_bench() {  # run_bench BUDGET_S NAME SCRIPT ARGS...: one benchmark under a hard timeout
    local budget=$1 name=$2
    shift 2
    timeout "$budget" $PY "$@" || echo "$name ended with status $? (124 = its $budget s budget; what it measured is kept)"
}

stage "predict: whole-body pair, end to end vs plain MONAI"
run_bench "${PREDICT_S:-${BUDGET_DEFAULT:-80}}" predict benchmarks/bench_predict.py "${PREDICT_ARGS[@]}" --out "$OUT/predict.json"

stage "pretrain: SwinUNETR-v2 48, reference vs ours (eager), loader, GPU utilization"
run_bench "${PRETRAIN_S:-${BUDGET_DEFAULT:-60}}" pretrain benchmarks/bench_pretrain.py "${PRETRAIN_ARGS[@]}" --out "$OUT/pretrain_swin.json"

stage "pretrain: residual UNet, reference vs ours"
run_bench "${UNET_S:-${BUDGET_DEFAULT:-35}}" unet benchmarks/bench_pretrain.py "${UNET_ARGS[@]}" --out "$OUT/pretrain_unet.json"

if [ ${#COMPILE_ARGS[@]} -gt 0 ]; then
    stage "pretrain: SwinUNETR-v2 48 with torch.compile (in the time left)"
    run_bench "${COMPILE_S:-${BUDGET_DEFAULT:-40}}" compile benchmarks/bench_pretrain.py "${COMPILE_ARGS[@]}" --out "$OUT/pretrain_compile.json"
fi

for method in fratmae promptable; do
    stage "$method"
    if ! $PY -c "import importlib.util as u, sys; sys.exit(u.find_spec('petctfm.methods.$method') is None)" 2>/dev/null; then
        echo "skipped: petctfm.methods.$method does not exist yet"
    elif [ -f "benchmarks/bench_$method.py" ]; then
        timeout 60 $PY "benchmarks/bench_$method.py" $([ "$SMOKE" = 1 ] && echo --cpu-smoke) --out "$OUT/$method.json" \
            || echo "$method benchmark ended with status $?"
    else
        echo "skipped: petctfm.methods.$method exists but benchmarks/bench_$method.py does not (add it; see docs/gpu.md)"
    fi
done

stage "report"
$PY benchmarks/gpu/report.py speed "$OUT" --seconds $((SECONDS - T_START)) --smoke "$SMOKE"
stage "done"
