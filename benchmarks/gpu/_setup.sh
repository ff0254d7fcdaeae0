# Sourced by speed.sh and science.sh (not run on its own): arguments, $OUT, the carried wheels, the Python path.
#
# GPU mode (default): installs the wheels carried in .whl/ (benchmarks/gpu/fetch_wheels.sh made them) into
# /tmp/petctfm_site, then petctfm itself (editable, no dependencies; the checkout's src/ is on PYTHONPATH
# in any case). --smoke: nothing is installed; the current Python ($PYTHON, default python3) must already
# have petctfm's dependencies (the CI environment); everything runs on the CPU.
set -uo pipefail
SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (only --smoke)" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
OUT=${OUT:-$ROOT/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
T_START=$SECONDS

stage() {  # stage NAME: a timestamped header in the log
    echo "=== [$((SECONDS - T_START)) s] $*"
}

if [ "$SMOKE" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny 3D convolutions on a shared CPU: 1 thread is fastest
else
    if ls .whl/*.whl >/dev/null 2>&1; then
        stage "installing $(ls .whl/*.whl | wc -l) carried wheels"
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/petctfm_site .whl/*.whl || { echo "wheel install failed"; exit 1; }
        export PYTHONPATH=/tmp/petctfm_site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "no .whl/ here: assuming the dependencies are installed (else run benchmarks/gpu/fetch_wheels.sh and carry .whl)"
    fi
    $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 \
        || echo "(editable install skipped: using PYTHONPATH=src)"
fi
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
$PY - <<'PYEOF' || { echo "petctfm or a dependency does not import: see above"; exit 1; }
import importlib, platform
import torch
import petctfm
vers = {m: getattr(importlib.import_module(m), "__version__", "?") for m in ("monai", "nibabel", "SimpleITK", "numpy")}
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__}, GPU {gpu}, petctfm from {petctfm.__file__}, {vers}")
PYEOF
