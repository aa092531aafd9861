#!/usr/bin/env bash
# Runs the CUDA backend's tests, then KernelBench, on a GPU host prepared with shared/device/pack.sh + stage.sh
# (see /work/shared/device/README.md). Logs and JUnit XML reports go to $OUT (default ./gpu-out).
#
# usage (from the project root on the GPU host):  bash kernels/src/test/device/gpu-run.sh [KernelBench options]
#   e.g. bash kernels/src/test/device/gpu-run.sh --only FlashMoBA
# Environment: MOBA_TESTS=0 skips the tests, MOBA_BENCH=0 skips the benchmark,
#              MOBA_TEST_SEED=N reruns the tests with a given seed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../../../.." && pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
if [ -z "${MOBA_CP:-}" ]; then
  . /opt/moba-device/env.sh || { echo "gpu-run.sh: run .device/app/stage.sh first (no /opt/moba-device/env.sh)" >&2; exit 2; }
fi
nvidia-smi --query-gpu=name,pci.bus_id,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
status=0

if [ "${MOBA_TESTS:-1}" != 0 ]; then
  seed=${MOBA_TEST_SEED:+-Dmoba.test.seed=$MOBA_TEST_SEED}
  # From kernels/, so FatbinFreshnessTest finds src/main/cuda.
  (cd "$root/kernels" && java $MOBA_JAVA_OPTS -Xmx32g $seed -cp "$MOBA_CP" \
      org.junit.platform.console.ConsoleLauncher execute --select-package=org.moba.kernels.cuda \
      --details=tree --disable-banner --disable-ansi-colors --reports-dir="$out/junit") > "$out/tests.log" 2>&1
  rc=$?
  tail -n 60 "$out/tests.log"
  echo "gpu-run.sh: tests exited with $rc (full log: $out/tests.log)"
  [ $rc = 0 ] || status=1
fi

if [ "${MOBA_BENCH:-1}" != 0 ]; then
  java -Xmx64g -cp "$MOBA_CP" org.moba.kernels.bench.KernelBench "$@" > "$out/bench.log" 2>&1
  rc=$?
  cat "$out/bench.log"
  echo "gpu-run.sh: KernelBench exited with $rc (log: $out/bench.log)"
  [ $rc = 0 ] || status=1
fi
exit $status
