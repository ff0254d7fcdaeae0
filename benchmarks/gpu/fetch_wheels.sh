#!/usr/bin/env bash
# benchmarks/gpu/fetch_wheels.sh [--check] [--dicom]: download, here, the wheels the device machine lacks
# (Python 3.12, x86-64 manylinux: what the H200 image runs) into .whl/ (git-ignored; the run call carries it),
# then check that the working tree that travels plus .whl/ stays under the device tool's 64 MiB.
#   --check: only the size check (no download).
#   --dicom: also pydicom, highdicom and pyjpegls (DICOM reading/writing; the GPU scripts do not need them,
#            and with SimpleITK's 50 MB they pass the 64 MiB limit: the check then fails).
# The device image already has torch, numpy, scipy, einops, safetensors, matplotlib, rich, PyYAML,
# tensorboard, packaging and typing-extensions; it lacks MONAI, nibabel, SimpleITK, cc3d and isal.
# Versions: the pins of pyproject.toml.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
CHECK_ONLY=0 DICOM=0
for arg in "$@"; do
    case "$arg" in
        --check) CHECK_ONLY=1 ;;
        --dicom) DICOM=1 ;;
        *) echo "unknown argument: $arg (--check, --dicom)" >&2; exit 2 ;;
    esac
done
pin() {  # the version pinned in pyproject.toml for package $1
    sed -n "s/^ *\"$1==\([^\"]*\)\".*/\1/p" pyproject.toml
}
PKGS=(monai nibabel SimpleITK connected-components-3d isal)
[ "$DICOM" = 1 ] && PKGS+=(pydicom highdicom)
if [ "$CHECK_ONLY" = 0 ]; then
    rm -rf .whl && mkdir -p .whl
    SPECS=()
    for p in "${PKGS[@]}"; do SPECS+=("$p==$(pin "$p")"); done
    [ "$DICOM" = 1 ] && SPECS+=("pyjpegls")
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl "${SPECS[@]}"
fi
ls -l .whl 2>/dev/null || echo "no .whl/ yet"
# what travels: tracked files + untracked files git does not ignore + the carried .whl/
LIMIT=$((64 * 1024 * 1024))
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s+=$1} END {print s+0}')
WHL=$( (du -sb .whl 2>/dev/null || true) | cut -f1)
TOTAL=$((TREE + ${WHL:-0}))
awk -v t="$TREE" -v w="${WHL:-0}" 'BEGIN {printf "working tree %.1f MiB + .whl %.1f MiB = %.1f MiB (limit 64 MiB)\n", t/1048576, w/1048576, (t+w)/1048576}'
if [ "$TOTAL" -ge "$LIMIT" ]; then
    echo "over the 64 MiB carry limit: drop --dicom, or remove large untracked files from the checkout" >&2
    exit 1
fi
echo "ok: fits the carry limit"
