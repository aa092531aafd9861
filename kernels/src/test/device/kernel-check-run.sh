#!/usr/bin/env bash
# The kernels alone on a GPU host, in one call and without Java: builds the standalone harness
# (kernels/src/test/cuda/kernel_check.cu) with the host's nvcc, runs it on the committed fatbin (which FatbinFreshnessTest
# keeps equal to the sources), and prints a short summary last:
#   1. forward `check` and backward `bwd-check` against the float64 oracle (fresh seeds unless MOBA_TEST_SEED is set;
#      on Hopper the backward check runs the fused and wgmma kernels and, with MOBA_KC_BWD_FUSED=0 MOBA_KC_BWD_DQ_H=0,
#      once more on the mma.sync kernels);
#   2. `time` / `bwd-time` on the FlashMoBA shapes, dense 2 x 64K and 1 x 64K H32 chunk 4096 (the backward also with the
#      mma.sync kernels);
#   3. cuDNN's dense attention through PyTorch (cudnn_dense.py --backward), the baseline of the same run;
#   4. unless quick or MOBA_KC_NCU=0: ncu at FlashMoBA 2 x 64K, the backward routing's kernels one by one (durations,
#      into the summary) and the fused and dq kernels in full (profile.txt).
# Logs go to $OUT (default ./kernel-out), six files at most (a device call brings eight back).
#
# usage (from the project root on the GPU host):  bash kernels/src/test/device/kernel-check-run.sh [quick]
#   quick: the checks and the 2 x 8K timings only.
set -uo pipefail
root=$(cd "$(dirname "$0")/../../../.." && pwd)
out=${OUT:-$root/kernel-out}
mkdir -p "$out"
fatbin=${MOBA_FATBIN:-$root/kernels/src/main/resources/org/moba/kernels/cuda/moba.fatbin}
harness=$(mktemp -d)/kernel_check  # not in $OUT: only logs come back
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
nvcc -std=c++17 -O3 -arch=sm_90 -o "$harness" "$root/kernels/src/test/cuda/kernel_check.cu" || exit 2
export CUDA_MODULE_LOADING=EAGER
seed=${MOBA_TEST_SEED:-$(date +%s)}
summary="$out/summary.txt"
echo "== kernel-check-run.sh summary (seed $seed) ==" > "$summary"
head -1 "$out/gpu.txt" >> "$summary"
old_kernels=(env MOBA_KC_BWD_FUSED=0 MOBA_KC_BWD_DQ_H=0)

check() {  # name, then the harness's arguments
  local name=$1; shift
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  grep -E "^FAIL" "$out/$name.log" | head -20
  echo "$name: $(tail -1 "$out/$name.log") (exit $rc)" | tee -a "$summary"
}
check forward-check "$harness" "$fatbin" check "$seed"
check backward-check "$harness" "$fatbin" bwd-check "$seed"
check backward-check-mma-sync "${old_kernels[@]}" "$harness" "$fatbin" bwd-check "$seed"

shapes=("FlashMoBA 2x8K")
[ "${1:-}" = quick ] || shapes+=("FlashMoBA 2x64K" "dense 2x64K" "1x64K H32")
for shape in "${shapes[@]}"; do
  "$harness" "$fatbin" time "$shape" 2>&1 | grep -E "^(TIME|PHASES)" | tee -a "$summary"
  "$harness" "$fatbin" bwd-time "$shape" 2>&1 | grep BWDTIME | tee -a "$summary"
  "${old_kernels[@]}" "$harness" "$fatbin" bwd-time "$shape" 2>&1 | grep BWDTIME | head -1 \
      | sed 's/^BWDTIME /BWDTIME [mma.sync] /' | tee -a "$summary"
done
python3 "$root/kernels/src/test/device/cudnn_dense.py" --backward --iters 10 2>&1 | tail -6 | tee -a "$summary"
if [ "${1:-}" != quick ] && [ "${MOBA_KC_NCU:-1}" != 0 ]; then
  ncu=(ncu --clock-control none)
  # The first nine routing launches of bwd-time: the forward's count, scan, fill, then the backward's five.
  "${ncu[@]}" --metrics gpu__time_duration.sum -k regex:route -c 9 "$harness" "$fatbin" bwd-time "FlashMoBA 2x64K" 2>&1 \
      | grep -E "^  moba_|gpu__time_duration" | paste - - | awk '{print "NCU", $1, $NF, $(NF-1)}' | tee -a "$summary"
  profile="$out/profile.txt"
  : > "$profile"
  for kernel in moba_bwd_fused moba_bwd_dq_h; do
    report=$(mktemp -d)/$kernel
    "${ncu[@]}" --set full -k "regex:$kernel" -c 1 -o "$report" "$harness" "$fatbin" bwd-time "FlashMoBA 2x64K" > /dev/null 2>&1
    ncu -i "$report.ncu-rep" --page details >> "$profile" 2>&1
  done
  grep -E "^  moba_|Duration|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy" "$profile" | tee -a "$summary"
fi
echo
cat "$summary"
